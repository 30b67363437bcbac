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
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        command_line(command),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `command` and panics, with its command line and stdout, if it exits 0. Returns its
/// output.
pub fn expect_failure(command: &mut Command) -> Output {
    let output = output_of(command);
    assert!(
        !output.status.success(),
        "{} unexpectedly succeeded:\nstdout:\n{}",
        command_line(command),
        String::from_utf8_lossy(&output.stdout)
    );
    output
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
