//! Where a passphrase comes from, first found wins: `--passphrase-file`, then
//! `--passphrase-command`, then `COFFER_PASSPHRASE`, then a prompt on the
//! terminal. A file and a command at once are refused (whichever way each was
//! given, flag or environment). An empty passphrase is refused, whatever its source.

use anyhow::{Context, bail};
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// The sources a command line names; `flags` says how errors call them
/// (`--passphrase-…` for the repository's, `--new-passphrase-…` for a new one).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub file: Option<&'a Path>,
    pub command: Option<&'a str>,
    pub flags: &'static str,
    /// Whether `COFFER_PASSPHRASE` counts (not for a new passphrase).
    pub env: bool,
}

impl Source<'_> {
    /// Reads the passphrase; `confirm` asks twice on a terminal (for a new one).
    pub fn read(&self, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
        let flags = self.flags;
        let pass = match (self.file, self.command) {
            (Some(_), Some(_)) => {
                bail!("choose one of --{flags}-file and --{flags}-command")
            }
            (Some(f), None) => from_file(f)?,
            (None, Some(cmd)) => {
                let flag = format!("--{flags}-command");
                let out = crate::secret::run(&flag, cmd)?;
                let pass = crate::secret::first_line(&flag, &out)?;
                if pass.is_empty() {
                    bail!("{flag} printed no passphrase: an empty passphrase is not allowed");
                }
                pass
            }
            (None, None) => self.env_or_prompt(confirm)?,
        };
        if pass.is_empty() {
            bail!("an empty passphrase is not allowed");
        }
        Ok(pass)
    }

    fn env_or_prompt(&self, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
        if self.env
            && let Ok(p) = std::env::var("COFFER_PASSPHRASE")
        {
            return Ok(Zeroizing::new(p));
        }
        if !std::io::stdin().is_terminal() {
            let flags = self.flags;
            let env = if self.env {
                "set COFFER_PASSPHRASE, "
            } else {
                ""
            };
            bail!(
                "a passphrase is needed: {env}use --{flags}-file or --{flags}-command, or run on a terminal"
            );
        }
        let label = if self.env { "coffer" } else { "new" };
        let p = Zeroizing::new(rpassword::prompt_password(format!("{label} passphrase: "))?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
            if *again != *p {
                bail!("the passphrases do not match");
            }
        }
        Ok(p)
    }
}

/// The first line of a passphrase file.
fn from_file(f: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(f)
            .with_context(|| format!("cannot read passphrase file {}", f.display()))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}
