//! The S3 server the tests run against: Garage, started by `scripts/garage up`
//! (the test command does it). Tests that need it fail — never skip — when its
//! environment is missing.

use crate::env::Env;
use coffer_engine::store::{S3Options, S3Store};

/// Connection settings of the test S3 server.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub region: String,
}

impl S3Env {
    /// Reads `AWS_ENDPOINT_URL`, `AWS_REGION` and the key variables.
    pub fn from_env() -> S3Env {
        let need = |name: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
                panic!(
                    "S3 tests need a running Garage and {name}: run scripts/test, or `eval \"$(scripts/garage up)\"` first"
                )
            })
        };
        need("AWS_ACCESS_KEY_ID");
        need("AWS_SECRET_ACCESS_KEY");
        S3Env {
            endpoint: need("AWS_ENDPOINT_URL"),
            region: need("AWS_REGION"),
        }
    }

    /// A bucket name no other test uses.
    pub fn unique_bucket(prefix: &str) -> String {
        use rand::RngCore;
        let mut r = [0u8; 6];
        rand::rng().fill_bytes(&mut r);
        format!("{prefix}-{}", hex::encode(r))
    }

    /// Points a CLI sandbox at `endpoint` (the server, or a proxy in front of it).
    pub fn configure(&self, env: &mut Env, endpoint: &str) {
        env.set("AWS_ENDPOINT_URL", endpoint);
        env.set("AWS_REGION", &self.region);
        // Keep retries and stall detection quick, so fault tests stay short.
        env.set("COFFER_STALL_TIMEOUT", "2");
    }

    /// An engine-level client for `bucket` at `endpoint`.
    pub async fn store(&self, bucket: &str, endpoint: &str) -> S3Store {
        let mut opts = S3Options::new(bucket, "");
        opts.endpoint = Some(endpoint.to_string());
        opts.region = Some(self.region.clone());
        S3Store::connect(opts).await.expect("S3 client")
    }
}
