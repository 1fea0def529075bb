//! What every command needs: the coffer home, the keyring, stores and unlocking.

use crate::args::GlobalArgs;
use crate::progress::Bars;
use anyhow::{Context as _, bail};
use coffer_engine::keyring::{self, Keyring};
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, LocalStore, StoreLocation};
use std::sync::Arc;

/// Shared state of one invocation.
#[derive(Debug)]
pub struct Ctx {
    pub global: GlobalArgs,
    pub keyring: Keyring,
    pub progress: Arc<Bars>,
}

/// An opened store and the URL it was named by.
#[derive(Debug, Clone)]
pub struct OpenStore {
    pub store: DynStore,
    pub url: String,
}

impl Ctx {
    pub fn new(global: GlobalArgs) -> anyhow::Result<Ctx> {
        let home = keyring::default_home()?;
        Ok(Ctx {
            keyring: Keyring::new(&home),
            progress: Arc::new(Bars::new(global.quiet)),
            global,
        })
    }

    /// Opens the store named by `location`; `create` makes a local directory.
    pub async fn store(&self, location: &str, create: bool) -> anyhow::Result<OpenStore> {
        let loc = StoreLocation::parse(location)?;
        let (store, url): (DynStore, String) = match loc {
            StoreLocation::Local(path) => {
                let s = LocalStore::open(&path, create)?;
                let url = format!("file://{}", s.root().display());
                (Arc::new(s), url)
            }
            StoreLocation::S3 { .. } => {
                bail!("{location}: S3 stores are not built into this version yet")
            }
            StoreLocation::Memory(_) => {
                bail!("{location}: memory stores exist only inside one process")
            }
        };
        Ok(OpenStore { store, url })
    }

    /// Opens and unlocks the repository at `location`.
    pub async fn repo(&self, location: &str) -> anyhow::Result<(Repository, OpenStore)> {
        let opened = self.store(location, false).await?;
        let file = self.global.passphrase_file.clone();
        let mut ask = move || {
            crate::passphrase::read(file.as_deref(), false)
                .map_err(|e| coffer_engine::Error::KeyRequired(crate::output::one_line(&e)))
        };
        let repo = Repository::open(opened.store.clone(), &self.keyring, &mut ask)
            .await
            .with_context(|| format!("cannot open {}", opened.url))?;
        Ok((repo, opened))
    }

    /// Prints a summary line unless `--quiet`.
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.global.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

impl Ctx {
    /// A warning on stderr (above any progress bar) unless `--quiet`.
    pub fn progress_warn(&self, message: &str) {
        use coffer_engine::progress::Progress;
        self.progress.warn(message);
    }
}
