//! Running a program and insisting on how it ends.

use std::process::{Command, Output};

/// The command line of `command`, for messages: program then arguments, lossily decoded.
pub fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to completion with its output captured; panics if it cannot be started.
pub fn output_of(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(command)))
}

/// Runs `command` and panics, with its command line, stdout and stderr, unless it exits 0.
/// Returns its output.
pub fn expect_success(command: &mut Command) -> Output {
    let output = output_of(command);
    assert_succeeded(&command_line(command), &output);
    output
}

/// Runs `command` and panics, with its command line and stdout, if it exits 0. Returns its
/// output.
pub fn expect_failure(command: &mut Command) -> Output {
    let output = output_of(command);
    assert_failed(&command_line(command), &output);
    output
}

/// Panics, naming `what` ran and with its stdout and stderr, unless `output` is of a success.
pub fn assert_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Panics, naming `what` ran and with its stdout, if `output` is of a success.
pub fn assert_failed(what: &str, output: &Output) {
    assert!(
        !output.status.success(),
        "{what} unexpectedly succeeded:\nstdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_failure_are_told_apart() {
        let ok = expect_success(Command::new("sh").args(["-c", "echo out"]));
        assert_eq!(ok.stdout, b"out\n");
        let failed = expect_failure(Command::new("sh").args(["-c", "echo err >&2; exit 3"]));
        assert_eq!(failed.status.code(), Some(3));
        assert_eq!(failed.stderr, b"err\n");
    }

    #[test]
    #[should_panic(expected = "sh -c exit 1 failed")]
    fn a_failure_names_the_command() {
        expect_success(Command::new("sh").args(["-c", "exit 1"]));
    }

    #[test]
    #[should_panic(expected = "unexpectedly succeeded")]
    fn an_unexpected_success_panics() {
        expect_failure(&mut Command::new("true"));
    }
}
