//! A fresh SoftHSM2 token in a directory of its own. Shared by the integration tests'
//! [`Hsm`](super::softhsm::Hsm) and the load bench, which includes this file by path.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Initialises a token labelled `label` under `dir`, with user PIN `pin` (also in the PIN file
/// `dir/pin`, mode 0600: the plugin refuses one its group or others can read) and SO PIN
/// `so_pin`. Returns the config file every process touching the token names in
/// `SOFTHSM2_CONF`, and the token directory.
pub(crate) fn init_token(dir: &Path, label: &str, pin: &str, so_pin: &str) -> (PathBuf, PathBuf) {
    let tokens = dir.join("tokens");
    fs::create_dir_all(&tokens).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .expect("softhsm conf");
    let pin_file = dir.join("pin");
    fs::write(&pin_file, format!("{pin}\n")).expect("pin file");
    fs::set_permissions(&pin_file, fs::Permissions::from_mode(0o600)).expect("pin file mode");
    // SoftHSM2 missing? `bash .ci/provision-softhsm.sh` installs it.
    testkit::expect_success(
        Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", so_pin])
            .env("SOFTHSM2_CONF", &conf),
    );
    (conf, tokens)
}
