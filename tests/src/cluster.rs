//! The 3-node Garage cluster the node-loss tests run against, started by
//! `scripts/garage cluster up` (the test command does it). Tests that need it
//! fail — never skip — when its environment is missing. Nodes are killed and
//! started through the same script; a [`Down`] guard starts its node again when a
//! test ends, even by a failed assertion, so the next test finds three nodes.

use crate::env::Env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Connection settings of the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The S3 endpoints of nodes 1, 2 and 3.
    pub nodes: [String; 3],
    key_id: String,
    secret: String,
    region: String,
}

/// `scripts/garage` of this checkout.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/garage")
}

fn need(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "cluster tests need a running 3-node Garage and {name}: run scripts/test, or `eval \"$(scripts/garage cluster up)\"` first"
            )
        })
}

impl Cluster {
    /// Reads `COFFER_CLUSTER_*`, and starts any node a previous test left dead.
    pub fn from_env() -> Cluster {
        let c = Cluster {
            nodes: [
                need("COFFER_CLUSTER_S3_1"),
                need("COFFER_CLUSTER_S3_2"),
                need("COFFER_CLUSTER_S3_3"),
            ],
            key_id: need("COFFER_CLUSTER_KEY_ID"),
            secret: need("COFFER_CLUSTER_SECRET"),
            region: need("COFFER_CLUSTER_REGION"),
        };
        need("COFFER_GARAGE_CLUSTER_DIR");
        run_script(&["cluster", "up"]);
        c
    }

    /// Endpoints of the nodes numbered `which` (1-based), comma-separated.
    pub fn endpoints(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|n| self.nodes[n - 1].as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Points a CLI sandbox at the nodes `which` (as `AWS_ENDPOINT_URL`) with the
    /// cluster's key.
    pub fn configure(&self, env: &mut Env, which: &[usize]) {
        env.set("AWS_ENDPOINT_URL", &self.endpoints(which));
        env.unset("AWS_ENDPOINT_URL_S3");
        env.set("AWS_ACCESS_KEY_ID", &self.key_id);
        env.set("AWS_SECRET_ACCESS_KEY", &self.secret);
        env.set("AWS_REGION", &self.region);
        env.set("AWS_DEFAULT_REGION", &self.region);
        // Cut stalled transfers quickly, as the single-node S3 tests do.
        env.set("COFFER_STALL_TIMEOUT", "2");
    }

    /// Kills node `n` (1-based) with SIGKILL; it stays down until the guard is
    /// dropped or [`Down::start`] is called.
    pub fn kill(&self, n: usize) -> Down {
        run_script(&["cluster", "kill", &n.to_string()]);
        Down { node: n, up: false }
    }

    /// The bytes node `n` holds in its data directory (blocks it stored).
    pub fn data_bytes(&self, n: usize) -> u64 {
        let dir = PathBuf::from(need("COFFER_GARAGE_CLUSTER_DIR")).join(format!("node{n}/data"));
        crate::tree::du(&dir)
    }
}

/// A node killed by [`Cluster::kill`].
#[derive(Debug)]
pub struct Down {
    node: usize,
    up: bool,
}

impl Down {
    /// Starts the node again on its data and waits until its S3 port answers.
    pub fn start(mut self) {
        self.up = true;
        run_script(&["cluster", "start", &self.node.to_string()]);
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        if !self.up {
            // Best effort in a test that is already failing: no assertion here.
            let _ = Command::new(script())
                .args(["cluster", "start", &self.node.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn run_script(args: &[&str]) {
    let out = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/garage runs");
    assert!(
        out.status.success(),
        "scripts/garage {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
