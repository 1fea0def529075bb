//! A sandbox to run the coffer binary in: its own temp dir, `COFFER_HOME`,
//! passphrase, and fast (minimum) Argon2id parameters. Proxy/CA variables of the
//! machine are removed so loopback endpoints are reached directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The passphrase every test repository uses.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// One sandbox.
#[derive(Debug)]
pub struct Env {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    home: PathBuf,
    extra: Vec<(String, String)>,
    unset: Vec<String>,
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// The machine's HTTP proxy settings: loopback servers are reached directly.
pub const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl Env {
    pub fn new(bin: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("coffer-it-")
            .tempdir()
            .unwrap();
        let home = dir.path().join("home");
        Env {
            bin: PathBuf::from(bin),
            home,
            dir,
            extra: Vec::new(),
            unset: Vec::new(),
        }
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Another machine: same sandbox, another `COFFER_HOME` (empty keyring).
    pub fn machine(&self, name: &str) -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("coffer-it-m-")
                .tempdir_in(self.dir.path())
                .unwrap(),
            bin: self.bin.clone(),
            home: self.dir.path().join(format!("home-{name}")),
            extra: self.extra.clone(),
            unset: self.unset.clone(),
        }
    }

    /// Adds an environment variable to every command.
    pub fn set(&mut self, key: &str, value: &str) {
        self.unset.retain(|k| k != key);
        self.extra.push((key.into(), value.into()));
    }

    /// Removes an environment variable from every command (`COFFER_PASSPHRASE`,
    /// say, which the sandbox otherwise sets).
    pub fn unset(&mut self, key: &str) {
        self.extra.retain(|(k, _)| k != key);
        self.unset.push(key.into());
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The command, with the sandbox environment.
    pub fn cmd(&self) -> Command {
        self.sandboxed(Command::new(&self.bin))
    }

    /// Runs `coffer ARGS...` with its address space limited to `kib` KiB
    /// (`ulimit -v`), as on a small VM or under a container's memory limit.
    pub fn run_with_memory_limit<S: AsRef<std::ffi::OsStr>>(&self, kib: u64, args: &[S]) -> Run {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"ulimit -v "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(kib.to_string())
            .arg(&self.bin)
            .args(args);
        to_run(self.sandboxed(c).output().unwrap())
    }

    fn sandboxed(&self, mut c: Command) -> Command {
        for var in PROXY_VARS.into_iter().chain([
            "AWS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "COFFER_PASSPHRASE_FILE",
            "COFFER_PASSPHRASE_COMMAND",
            "COFFER_SSE_C_KEY_FILE",
            "COFFER_SSE_C_KEY_COMMAND",
        ]) {
            c.env_remove(var);
        }
        c.env("COFFER_HOME", &self.home)
            .env("COFFER_PASSPHRASE", PASSPHRASE)
            .env("COFFER_KDF_MEMORY_MIB", "19")
            .env("COFFER_KDF_ITERATIONS", "2")
            .env("COFFER_KDF_PARALLELISM", "1")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        for k in &self.unset {
            c.env_remove(k);
        }
        c
    }

    /// Runs `coffer ARGS...`.
    /// Runs the program with its clock moved by `offset` (libfaketime's `-f`
    /// syntax: `+1d`, `-10m`); `faketime` must be installed (scripts/test does).
    pub fn ok_with_clock<S: AsRef<std::ffi::OsStr>>(&self, offset: &str, args: &[S]) -> Run {
        let r = self.run_with_clock(offset, args);
        assert!(r.ok(), "faketime {offset} {:?}: {}", r.code, r.stderr);
        r
    }

    /// [`Env::ok_with_clock`], but the run may fail.
    pub fn run_with_clock<S: AsRef<std::ffi::OsStr>>(&self, offset: &str, args: &[S]) -> Run {
        let mut c = Command::new("faketime");
        c.arg("-f").arg(offset).arg(&self.bin).args(args);
        to_run(self.sandboxed(c).output().expect("faketime is installed"))
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let out = self.cmd().args(args).output().unwrap();
        to_run(out)
    }

    /// Runs and asserts success.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let r = self.run(args);
        assert!(
            r.ok(),
            "coffer {:?} failed ({:?}):\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            r.code,
            r.stderr
        );
        r
    }

    /// Runs and asserts failure; returns the result for message checks.
    pub fn fails<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let r = self.run(args);
        assert!(
            !r.ok(),
            "coffer {:?} should have failed:\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            r.stderr
        );
        assert!(
            r.code.is_some(),
            "killed by a signal (a panic?):\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "panicked:\n{}", r.stderr);
        r
    }
}

fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}
