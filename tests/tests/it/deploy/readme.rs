//! deploy/README.md describes every file under deploy/.

use cross_crate_tests::files::{deploy, read};

#[test]
fn readme_describes_every_deployment_file() {
    let readme = read(&deploy("README.md"));
    let mut stack = vec![deploy("")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(deploy(""))
                .expect("under deploy/")
                .to_str()
                .expect("utf-8")
                .to_owned();
            if relative == "README.md" {
                continue;
            }
            assert!(
                readme.contains(&relative),
                "deploy/README.md does not mention {relative}"
            );
        }
    }
}
