//! The Dockerfile: builds the binary the manifests run, with a new enough Rust, and runs the
//! static pod's command.

use cross_crate_tests::files::{deploy, read, repo_root};
use cross_crate_tests::pod::static_pod_command;

#[test]
fn dockerfile_builds_the_binary_the_manifests_run() {
    let file = "deploy/Dockerfile";
    let dockerfile = read(&deploy("Dockerfile"));
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    // Bases are build arguments (deploy/build-image.sh substitutes them); their defaults are the
    // production bases, and by default the builder compiles the binary itself.
    let arg_default = |name: &str| -> String {
        instructions
            .iter()
            .find_map(|l| {
                l.strip_prefix("ARG ")?
                    .strip_prefix(name)?
                    .strip_prefix('=')
            })
            .unwrap_or_else(|| panic!("{file}: no ARG {name}=<default>"))
            .to_owned()
    };
    assert_eq!(
        arg_default("PREBUILT_BINARY"),
        "",
        "{file}: builds from source by default"
    );
    let from: Vec<String> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(
            |f| match f.strip_prefix("${").and_then(|r| r.split_once('}')) {
                Some((name, rest)) => format!("{}{rest}", arg_default(name)),
                None => f.to_owned(),
            },
        )
        .collect();
    assert_eq!(from.len(), 2, "{file}: a builder and a runtime stage");
    assert!(
        from[1].starts_with("gcr.io/distroless/cc-debian12"),
        "{file}: glibc runtime (PKCS#11 modules are dlopen'ed)"
    );
    assert!(
        dockerfile.contains("cargo build --release -p kms-plugin --locked"),
        "{file}: release build of kms-plugin"
    );

    // The builder's Rust is at least the workspace's rust-version.
    let builder_version = from[0]
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .unwrap_or_else(|| panic!("{file}: builder is not rust:<version>"));
    let manifest = read(&repo_root().join("Cargo.toml"));
    let required = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("workspace rust-version");
    let parse = |v: &str| -> Vec<u32> {
        v.split('.')
            .map(|p| p.parse().expect("numeric version"))
            .collect()
    };
    assert!(
        parse(builder_version) >= parse(required),
        "{file}: rust:{builder_version} is older than rust-version {required}"
    );

    // ENTRYPOINT + CMD is the static pod's command.
    let json_list = |prefix: &str| -> Vec<String> {
        let line = instructions
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{file}: no {prefix}"));
        serde_yaml_ng::from_str(line).unwrap_or_else(|e| panic!("{file}: {prefix}{line}: {e}"))
    };
    let mut image_command = json_list("ENTRYPOINT ");
    image_command.extend(json_list("CMD "));
    let pod_command = static_pod_command();
    assert_eq!(
        image_command, pod_command,
        "{file}: ENTRYPOINT+CMD differ from the static pod's command"
    );
}
