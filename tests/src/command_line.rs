//! Flags of command lines written in manifests and units.

/// The `--flag VALUE` or `--flag=VALUE` argument of a command line.
pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(index, arg)| {
        if arg == flag {
            args.get(index + 1).cloned()
        } else {
            arg.strip_prefix(&format!("{flag}=")).map(str::to_owned)
        }
    })
}

/// Panics unless `args` runs the subcommand `sub` (the word after the program); `what` names the
/// command line in the message.
pub fn assert_subcommand(args: &[String], sub: &str, what: &str) {
    assert_eq!(
        args.get(1).map(String::as_str),
        Some(sub),
        "{what}: {args:?}"
    );
}
