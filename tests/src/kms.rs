//! The KMS server the tests run against: moto, started by `scripts/moto up`
//! (the test command does it). Tests that need it fail — never skip — when
//! `COFFER_TEST_KMS_ENDPOINT` is missing. Each test makes its own keys through
//! the KMS API.

use crate::env::Env;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};

/// moto keeps its keys per region; the tests use this one (Garage's region
/// name is not one moto knows).
pub const REGION: &str = "us-east-1";

/// The test KMS server.
#[derive(Debug, Clone)]
pub struct KmsEnv {
    pub endpoint: String,
}

/// A key made for one test.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// The key's ARN (it names its region).
    pub arn: String,
    /// `alias/NAME`, pointing at the key.
    pub alias: String,
}

impl KmsEnv {
    /// Reads `COFFER_TEST_KMS_ENDPOINT`.
    pub fn from_env() -> KmsEnv {
        let endpoint = std::env::var("COFFER_TEST_KMS_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "KMS tests need a running moto and COFFER_TEST_KMS_ENDPOINT: run scripts/test, or `eval \"$(scripts/moto up)\"` first"
                )
            });
        KmsEnv { endpoint }
    }

    fn client(&self) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "coffer-tests"))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A new symmetric key with the alias `alias/<name>-<random>`.
    pub fn create_key(&self, name: &str) -> TestKey {
        let client = self.client();
        Self::block_on(async {
            let made = client.create_key().send().await.unwrap();
            let meta = made.key_metadata.unwrap();
            let alias = format!("alias/{}", crate::s3::S3Env::unique_bucket(name));
            client
                .create_alias()
                .alias_name(&alias)
                .target_key_id(&meta.key_id)
                .send()
                .await
                .unwrap();
            TestKey {
                arn: meta.arn.unwrap(),
                alias,
            }
        })
    }

    /// Makes `env`'s commands reach KMS at `endpoint` (this server, or a
    /// proxy in front of it) as a machine with KMS credentials, in [`REGION`],
    /// and with no instance metadata. (An S3 test sets Garage's region back
    /// and names keys by ARN, which carries the region.)
    pub fn configure(&self, env: &mut Env, endpoint: &str) {
        env.set("AWS_ENDPOINT_URL_KMS", endpoint);
        env.set("AWS_REGION", REGION);
        env.set("AWS_DEFAULT_REGION", REGION);
        env.set("AWS_EC2_METADATA_DISABLED", "true");
        if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
            env.set("AWS_ACCESS_KEY_ID", "test");
            env.set("AWS_SECRET_ACCESS_KEY", "test");
        }
    }
}
