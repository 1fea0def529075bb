//! Secrets from a command (`--passphrase-command`, `--sse-c-key-command`), as
//! restic's `--password-command`: `sh -c CMD` with stdin closed, stdout captured
//! as the secret (in a zeroizing buffer), stderr captured for the error. A command
//! that fails — cannot start, exits non-zero, dies of a signal — is an error that
//! names its exit status and the last line of its stderr; its output is never used.

use anyhow::{Context, bail};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

/// The most of stderr's last line an error repeats.
const STDERR_LINE_MAX: usize = 200;

/// Runs `cmd` through `sh -c` and returns its stdout. `flag` names the option
/// in errors (`--passphrase-command`); the command itself is not repeated,
/// in case it holds a token.
pub fn run(flag: &str, cmd: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("{flag}: cannot run sh"))?;
    let stdout = Zeroizing::new(out.stdout);
    if out.status.success() {
        return Ok(stdout);
    }
    let how = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "failed".to_string(),
    };
    match last_line(&out.stderr) {
        Some(line) => bail!("{flag} {how}; its stderr ends with: {line}"),
        None => bail!("{flag} {how} (nothing on its stderr)"),
    }
}

/// The first line of `bytes` (without its `\n` or `\r\n`), as text.
pub fn first_line(flag: &str, bytes: &[u8]) -> anyhow::Result<Zeroizing<String>> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
    match std::str::from_utf8(line) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(_) => bail!("{flag} printed a first line that is not UTF-8"),
    }
}

/// The last non-blank line of a command's stderr, trimmed and shortened.
fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut short: String = line.chars().take(STDERR_LINE_MAX).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_a_successful_command() {
        let out = run("--x", "printf 'secret\\nmore\\n'").unwrap();
        assert_eq!(&out[..], b"secret\nmore\n");
        assert_eq!(*first_line("--x", &out).unwrap(), "secret");
        assert_eq!(*first_line("--x", b"crlf\r\n").unwrap(), "crlf");
        assert_eq!(*first_line("--x", b"").unwrap(), "");
    }

    #[test]
    fn a_failing_command_names_its_code_and_last_stderr_line() {
        let e = run(
            "--x",
            "echo first >&2; echo 'denied by vault' >&2; echo pw; exit 3",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--x exited with code 3; its stderr ends with: denied by vault"
        );
        let e = run("--x", "kill -9 $$").unwrap_err().to_string();
        assert_eq!(e, "--x was killed by signal 9 (nothing on its stderr)");
        let e = run("--x", "no-such-command-coffer")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--x exited with code 127;"), "{e}");
    }

    #[test]
    fn stdin_is_closed() {
        let out = run("--x", "cat; echo end").unwrap();
        assert_eq!(&out[..], b"end\n");
    }
}
