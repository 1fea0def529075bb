//! What every command needs: the coffer home, the keyring, settings, stores (with
//! retries sharing the upload window) and unlocking.

use crate::args::GlobalArgs;
use crate::ops::Ops;
use crate::ops::metered::MeteredStore;
use crate::ops::reporter::Reporter;
use crate::passphrase::Source;
use crate::settings::{self, Settings};
use anyhow::{Context as _, bail};
use coffer_engine::store::{
    Bandwidth, BreakerPolicy, DynStore, FailoverStore, LocalStore, RetryPolicy, RetryStore,
    S3Options, S3Store, Sse, SseCustomerKey, StoreLocation, ThrottledStore, validate_bucket,
};
use coffer_engine::{Access, Repository, SlotIdentity, Unlock, UploadOptions, UploadWindow};
use coffer_engine::{Keyring, keyring};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Shared state of one invocation.
#[derive(Debug)]
pub struct Ctx {
    pub global: GlobalArgs,
    pub home: PathBuf,
    pub keyring: Keyring,
    pub settings: Settings,
    /// The engine's progress, to bars, events and the live state.
    pub progress: Arc<Reporter>,
    /// Events, metrics and the daemon's live state.
    pub ops: Arc<Ops>,
    /// Upload window shared by the pipeline and the retry layer (AIMD).
    pub window: Arc<UploadWindow>,
    /// Upload and download limits shared by every store opened.
    pub bandwidth: Bandwidth,
    /// When the command began.
    pub started: std::time::Instant,
    /// AWS KMS, for KMS key slots (no request until one is used).
    pub kms: crate::kms::AwsKms,
}

/// The client bucket administration uses: the only one, else the first whose
/// endpoint accepts a connection within 2 s, else the first.
async fn admin(each: &[S3Store]) -> Option<S3Store> {
    if each.len() > 1 {
        for s in each {
            if s.reachable(Duration::from_secs(2)).await {
                return Some(s.clone());
            }
        }
    }
    each.first().cloned()
}

/// One endpoint's client as is; several (one cluster) behind a
/// [`FailoverStore`], so that a node that stops answering is skipped.
fn failover(mut each: Vec<S3Store>) -> anyhow::Result<DynStore> {
    if each.len() == 1
        && let Some(only) = each.pop()
    {
        return Ok(Arc::new(only));
    }
    let members = each
        .into_iter()
        .map(|s| (s.endpoint().to_string(), Arc::new(s) as DynStore))
        .collect();
    let store = FailoverStore::new(members, BreakerPolicy::default()).context("no S3 endpoint")?;
    Ok(Arc::new(store))
}

/// How a bare STORE word is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locate {
    /// A local path, created if missing (`init`).
    Create,
    /// An existing local path, else a bucket name.
    Existing,
    /// Always a bucket name (hcs3 commands).
    Bucket,
}

/// An opened store and the URL it was named by.
#[derive(Debug, Clone)]
pub struct OpenStore {
    pub store: DynStore,
    pub url: String,
    /// The bucket, for administration, when the store is S3.
    pub s3: Option<S3Store>,
}

impl Ctx {
    /// `ops`: the hub of this invocation (see [`Ops::new`]).
    pub fn new(global: GlobalArgs, ops: Arc<Ops>) -> anyhow::Result<Ctx> {
        let home = keyring::default_home()?;
        let bandwidth = limits(&global)?;
        let budget = global
            .request_budget
            .unwrap_or(DEFAULT_REQUEST_BUDGET_SECS)
            .max(1);
        let kms = crate::kms::AwsKms::new(global.kms_endpoint.clone(), Duration::from_secs(budget));
        Ok(Ctx {
            kms,
            bandwidth,
            keyring: Keyring::new(&home),
            settings: Settings::load(&home)?,
            progress: Arc::new(Reporter::new(global.quiet, ops.clone())),
            ops,
            window: UploadWindow::new(global.uploads.clamp(1, 256)),
            home,
            global,
            started: std::time::Instant::now(),
        })
    }

    /// Pipeline options for commands that upload.
    pub fn upload_options(&self) -> UploadOptions {
        UploadOptions {
            pack_target: self.global.pack_mib.clamp(1, 1024) * 1024 * 1024,
            window: self.window.clone(),
            ..UploadOptions::default()
        }
    }

    /// Where temporary state goes (`coffer set tmp=`).
    pub fn scratch(&self) -> Option<&Path> {
        self.settings.tmp.as_deref()
    }

    /// Where this machine caches the latest state of `repo` for `ls`, `get`
    /// and `list` (`$COFFER_HOME/views/<repository id>`).
    pub fn view_cache(&self, repo: coffer_engine::RepoId) -> PathBuf {
        self.home.join("views").join(repo.to_hex())
    }

    /// The latest merged state of `repo`, through this machine's view cache:
    /// only the commits since the last command that read it are fetched.
    pub async fn latest_view(&self, repo: &Repository) -> anyhow::Result<coffer_engine::RepoView> {
        let cache = self.view_cache(repo.id());
        let progress = self.progress.as_ref();
        Ok(coffer_engine::RepoView::load_cached(repo, &cache, self.scratch(), progress).await?)
    }

    /// Opens the store named by `location`.
    pub async fn store(&self, location: &str, how: Locate) -> anyhow::Result<OpenStore> {
        refuse_token(location)?;
        match locate(location, how)? {
            StoreLocation::Local(path) => {
                let s = LocalStore::open(&path, how == Locate::Create)?;
                let url = format!("file://{}", s.root().display());
                Ok(OpenStore {
                    store: self.stack(Arc::new(s), false),
                    url,
                    s3: None,
                })
            }
            StoreLocation::S3 { bucket, prefix } => {
                let each = S3Store::connect_each(self.s3_options(&bucket, &prefix)?).await?;
                let s3 = admin(&each).await.context("no S3 endpoint")?;
                let url = coffer_engine::store::ObjectStore::describe(&s3);
                Ok(OpenStore {
                    store: self.stack(failover(each)?, true),
                    url,
                    s3: Some(s3),
                })
            }
            StoreLocation::Memory(_) => {
                bail!("{location}: memory stores exist only inside one process")
            }
        }
    }

    /// The store stack over a back-end. An S3 back-end throttles its own
    /// bodies (built with `self.bandwidth`) and is retried; a local one is
    /// throttled by the wrapper. Each byte is counted once. The metrics count
    /// every attempt, right above the back-end.
    fn stack(&self, backend: DynStore, s3: bool) -> DynStore {
        let backend: DynStore = Arc::new(MeteredStore::new(backend, self.ops.clone()));
        if !s3 {
            return Arc::new(ThrottledStore::new(backend, self.bandwidth.clone()));
        }
        let policy = RetryPolicy {
            budget: Duration::from_secs(
                self.global
                    .request_budget
                    .unwrap_or(DEFAULT_REQUEST_BUDGET_SECS)
                    .max(1),
            ),
            ..RetryPolicy::default()
        };
        Arc::new(RetryStore::new(backend, policy, Some(self.window.clone())))
    }

    /// A client for `bucket`, for bucket administration: on the first endpoint
    /// that accepts a connection when several are given (no S3 request is made).
    pub async fn s3(&self, bucket: &str, prefix: &str) -> anyhow::Result<S3Store> {
        let each = S3Store::connect_each(self.s3_options(bucket, prefix)?).await?;
        admin(&each).await.context("no S3 endpoint")
    }

    fn s3_options(&self, bucket: &str, prefix: &str) -> anyhow::Result<S3Options> {
        let mut opts = S3Options::new(bucket, prefix);
        opts.endpoint = self.global.endpoint.clone();
        opts.allow_http = self.global.allow_http;
        opts.sse = self.sse()?;
        opts.saved_credentials = settings::load_credentials(&self.home)?;
        opts.stall_grace = Duration::from_secs(self.global.stall_timeout.max(1));
        opts.bandwidth = self.bandwidth.clone();
        Ok(opts)
    }

    fn sse(&self) -> anyhow::Result<Sse> {
        let g = &self.global;
        let customer = g.sse_c_key_file.is_some() || g.sse_c_key_command.is_some();
        if g.sse_c_key_file.is_some() && g.sse_c_key_command.is_some() {
            bail!("choose one of --sse-c-key-file and --sse-c-key-command");
        }
        if customer && g.sse_kms_key_id.is_some() {
            bail!("choose one of --sse-c-key-file/--sse-c-key-command and --sse-kms-key-id");
        }
        if let Some(file) = &g.sse_c_key_file {
            let bytes = zeroize::Zeroizing::new(
                std::fs::read(file)
                    .with_context(|| format!("cannot read SSE-C key file {}", file.display()))?,
            );
            let key = SseCustomerKey::from_file_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            return Ok(Sse::Customer(key));
        }
        if let Some(cmd) = &g.sse_c_key_command {
            let flag = "--sse-c-key-command";
            let bytes = crate::secret::run(flag, cmd)?;
            let key = SseCustomerKey::from_file_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{flag} printed a bad key: {e}"))?;
            return Ok(Sse::Customer(key));
        }
        Ok(match &g.sse_kms_key_id {
            Some(id) => Sse::Kms { key_id: id.clone() },
            None => Sse::None,
        })
    }

    /// The repository passphrase's sources on this command line.
    pub fn passphrase(&self) -> Source<'_> {
        Source {
            file: self.global.passphrase_file.as_deref(),
            command: self.global.passphrase_command.as_deref(),
            flags: "passphrase",
            env: true,
        }
    }

    /// Opens and unlocks the repository at `location`.
    pub async fn repo(
        &self,
        location: &str,
        how: Locate,
    ) -> anyhow::Result<(Repository, OpenStore)> {
        let opened = self.store(location, how).await?;
        let mut repo = self.unlock(&opened, self.passphrase()).await?;
        repo.distrust(crate::commands::distrust::load(&self.home, repo.id())?);
        // The open just listed the key epochs: a push or pull now needs not.
        repo.step_follows_open();
        Ok((repo, opened))
    }

    /// The keyring, unless `--no-keyring`.
    pub fn keyring(&self) -> Option<&Keyring> {
        (!self.global.no_keyring).then_some(&self.keyring)
    }

    /// Unlocks the repository of an opened store (keyring, else KMS slots,
    /// else passphrase).
    pub async fn unlock(
        &self,
        opened: &OpenStore,
        source: Source<'_>,
    ) -> anyhow::Result<Repository> {
        let mut ask = move || {
            source
                .read(false)
                .map_err(|e| coffer_engine::Error::KeyRequired(crate::output::one_line(&e)))
        };
        self.unlock_with(opened, &mut ask).await
    }

    /// [`Ctx::unlock`] with the passphrase from `ask`.
    pub async fn unlock_with(
        &self,
        opened: &OpenStore,
        ask: coffer_engine::PassphraseSource<'_>,
    ) -> anyhow::Result<Repository> {
        // A KMS failure is told before the passphrase slots are tried (the
        // passphrase may be asked for on the terminal).
        let warn = |e: &coffer_engine::Error| {
            eprintln!("coffer: {e}; trying the passphrase key slots");
        };
        let how = Unlock {
            keyring: self.keyring(),
            kms: Some(&self.kms),
            ask,
            warn: &warn,
        };
        let identity = self.identity()?;
        let access = Access {
            identity: identity.as_ref(),
            ..Access::default()
        };
        Repository::open_with_access(opened.store.clone(), how, access)
            .await
            .with_context(|| format!("cannot open {}", opened.url))
    }

    /// The age identity of `--identity` / `COFFER_IDENTITY_FILE`: its first
    /// line starting with `AGE-SECRET-KEY-` (comments and blank lines skipped).
    fn identity(&self) -> anyhow::Result<Option<SlotIdentity>> {
        let Some(file) = &self.global.identity else {
            return Ok(None);
        };
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read identity file {}", file.display()))?,
        );
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"));
        line.and_then(SlotIdentity::parse)
            .map(Some)
            .with_context(|| {
                format!(
                    "{}: no age X25519 identity (AGE-SECRET-KEY-1...)",
                    file.display()
                )
            })
    }

    /// Emits the command's summary event (its duration: since the start).
    pub fn summary(&self, mut s: crate::ops::events::Summary) {
        s.duration_seconds = self.started.elapsed().as_secs_f64();
        self.ops.emit(crate::ops::events::Event::Summary(s));
    }

    /// `--quiet` was given.
    pub fn quiet(&self) -> bool {
        self.global.quiet
    }

    /// Prints a summary line unless `--quiet`.
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.global.quiet {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A warning on stderr (above any progress bar) unless `--quiet`.
    pub fn progress_warn(&self, message: &str) {
        use coffer_engine::Progress;
        self.progress.warn(message);
    }
}

/// How long one request is retried before a command gives up (`--request-budget`).
pub const DEFAULT_REQUEST_BUDGET_SECS: u64 = 900;

/// The limits of `--limit-upload` / `--limit-download`, following their
/// schedules for as long as the process runs.
fn limits(global: &GlobalArgs) -> anyhow::Result<Bandwidth> {
    let bandwidth = Bandwidth::unlimited();
    let flags = [
        ("limit-upload", &global.limit_upload, &bandwidth.upload),
        (
            "limit-download",
            &global.limit_download,
            &bandwidth.download,
        ),
    ];
    for (flag, value, limiter) in flags {
        if let Some(value) = value {
            let schedule = crate::bandwidth::parse_limit(flag, value)?;
            crate::bandwidth::follow(limiter.clone(), schedule);
        }
    }
    Ok(bandwidth)
}

/// A drop token given where a repository is expected: it opens nothing.
fn refuse_token(location: &str) -> anyhow::Result<()> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let n = std::fs::File::open(location)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    if coffer_engine::DropToken::looks_like(&head[..n]) {
        bail!(
            "{location} is a drop token: it only writes into its drop (`coffer drop push TOKEN DIR`) and opens no repository data"
        );
    }
    Ok(())
}

/// Reads a STORE argument.
fn locate(location: &str, how: Locate) -> anyhow::Result<StoreLocation> {
    if location.contains("://") {
        return Ok(StoreLocation::parse(location)?);
    }
    let bare_bucket = !location.contains('/') && validate_bucket(location).is_ok();
    Ok(match how {
        Locate::Bucket => {
            validate_bucket(location)?;
            StoreLocation::S3 {
                bucket: location.to_string(),
                prefix: String::new(),
            }
        }
        Locate::Existing if bare_bucket && !Path::new(location).exists() => StoreLocation::S3 {
            bucket: location.to_string(),
            prefix: String::new(),
        },
        _ => StoreLocation::parse(location)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_words_are_buckets_only_when_not_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        std::fs::create_dir("localstore").unwrap();
        assert!(matches!(
            locate("localstore", Locate::Existing).unwrap(),
            StoreLocation::Local(_)
        ));
        assert!(matches!(
            locate("my-bucket", Locate::Existing).unwrap(),
            StoreLocation::S3 { .. }
        ));
        assert!(matches!(
            locate("my-bucket", Locate::Create).unwrap(),
            StoreLocation::Local(_)
        ));
        assert!(matches!(
            locate("my-bucket", Locate::Bucket).unwrap(),
            StoreLocation::S3 { .. }
        ));
        assert!(locate("Bad_Bucket", Locate::Bucket).is_err());
        assert!(matches!(
            locate("./dir", Locate::Existing).unwrap(),
            StoreLocation::Local(_)
        ));
    }
}
