//! Where the passphrase comes from: `--passphrase-file`, `COFFER_PASSPHRASE`, or a
//! prompt on the terminal — in that order. An empty passphrase is refused.

use anyhow::{Context, bail};
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

/// Reads the passphrase; `confirm` asks twice on a terminal (for `init`).
pub fn read(file: Option<&Path>, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    let pass = if let Some(f) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read passphrase file {}", f.display()))?,
        );
        Zeroizing::new(text.lines().next().unwrap_or("").to_string())
    } else if let Ok(p) = std::env::var("COFFER_PASSPHRASE") {
        Zeroizing::new(p)
    } else if std::io::stdin().is_terminal() {
        let p = Zeroizing::new(rpassword::prompt_password("coffer passphrase: ")?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
            if *again != *p {
                bail!("the passphrases do not match");
            }
        }
        p
    } else {
        bail!(
            "a passphrase is needed: set COFFER_PASSPHRASE, use --passphrase-file, or run on a terminal"
        );
    };
    if pass.is_empty() {
        bail!("an empty passphrase is not allowed");
    }
    Ok(pass)
}
