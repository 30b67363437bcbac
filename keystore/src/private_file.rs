//! Secrets kept in files (a PKCS#11 PIN, a signing key): read only from a file its owner alone
//! may access, bounded before anything is read, into one zeroizing buffer that never grows.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use zeroize::Zeroizing;

/// Reads all of `path`, at most `max_len` bytes. Refused, naming the file and `what` it holds:
/// a file its group or others may access, one owned by neither this process's user nor root
/// (both checked on the open file, so a swapped path cannot slip through), and one longer than
/// `max_len`. The buffer is sized once from the file's length and zeroized when dropped.
pub fn read_private(path: &Path, what: &str, max_len: usize) -> Result<Zeroizing<Vec<u8>>, String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let metadata = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown}: the {what} is accessible to group or others (mode {mode:o}); expected 0600 or 0400"
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if metadata.uid() != euid && metadata.uid() != 0 {
        return Err(format!(
            "{shown}: the {what} is owned by uid {}, neither this process's user (uid {euid}) nor root",
            metadata.uid()
        ));
    }
    let too_long = || format!("{shown}: the {what} is longer than {max_len} bytes");
    let len = usize::try_from(metadata.len()).map_err(|_| too_long())?;
    if len > max_len {
        return Err(too_long());
    }
    // One spare byte tells a file that grew since its length was read.
    let mut bytes = Zeroizing::new(vec![0u8; len + 1]);
    let mut filled = 0;
    loop {
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        if filled == bytes.len() {
            return Err(format!("{shown}: the {what} changed while it was read"));
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(path: &Path, contents: &[u8]) {
        std::fs::write(path, contents).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn reads_into_one_buffer_of_the_files_size() {
        let (_dir, path) = testkit::scratch_path("secret");
        let long = vec![b'7'; 300];
        private(&path, &long);
        let bytes = read_private(&path, "secret", 1024).expect("read");
        assert_eq!(bytes.as_slice(), long.as_slice());
        assert_eq!(
            bytes.capacity(),
            301,
            "sized once: the file plus one spare byte"
        );
    }

    #[test]
    fn refuses_shared_and_oversized_files_by_name() {
        let (_dir, path) = testkit::scratch_path("secret");
        private(&path, b"1234\n");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let error = read_private(&path, "secret", 64).expect_err("refused");
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(error.contains("group or others"), "{error}");
            assert!(!error.contains("1234"), "{error}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(read_private(&path, "secret", 64).is_ok());
        let error = read_private(&path, "secret", 4).expect_err("too long");
        assert!(error.contains("longer than 4 bytes"), "{error}");
    }
}
