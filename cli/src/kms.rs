//! AWS KMS for KMS key slots: the engine's [`KeyWrapper`] over `aws-sdk-kms`.
//!
//! Credentials and region come from the standard AWS chain (environment,
//! profile, instance role); a key ARN names its own region. The endpoint is
//! `--kms-endpoint`, else `AWS_ENDPOINT_URL_KMS`, else AWS's — never the S3
//! endpoint (`--endpoint`, `AWS_ENDPOINT_URL`). The client is built on first
//! use, so commands on repositories without KMS slots never touch it. A key
//! unwrapped once is remembered for the rest of the process (in memory only),
//! so a process asks KMS at most once per slot.

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use coffer_engine::{KeyWrapper, KmsContext, KmsError};
use std::sync::Mutex;
use std::time::Duration;
use zeroize::Zeroizing;

/// A KMS client for key slots.
pub struct AwsKms {
    /// `--kms-endpoint`, else `AWS_ENDPOINT_URL_KMS`.
    endpoint: Option<String>,
    /// How long one KMS operation may take, retries included.
    budget: Duration,
    client: tokio::sync::OnceCell<aws_sdk_kms::Client>,
    /// Ciphertexts already unwrapped, with their contexts and keys.
    unwrapped: Mutex<Vec<Unwrapped>>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys it remembers.
        f.debug_struct("AwsKms")
            .field("endpoint", &self.endpoint)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A ciphertext and context KMS opened, and the key it gave.
type Unwrapped = (Vec<u8>, KmsContext, Zeroizing<Vec<u8>>);

/// `key_id`'s region when it is an ARN (`arn:aws:kms:REGION:ACCOUNT:...`).
fn arn_region(key_id: &str) -> Option<String> {
    let parts: Vec<&str> = key_id.split(':').collect();
    (parts.len() >= 6 && parts[0] == "arn" && !parts[3].is_empty()).then(|| parts[3].to_string())
}

impl AwsKms {
    /// A client for `endpoint` (else `AWS_ENDPOINT_URL_KMS`, else AWS); no
    /// request is made.
    pub fn new(endpoint: Option<String>, budget: Duration) -> AwsKms {
        let endpoint = endpoint.or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_KMS")
                .ok()
                .filter(|v| !v.is_empty())
        });
        AwsKms {
            endpoint,
            budget,
            client: tokio::sync::OnceCell::new(),
            unwrapped: Mutex::new(Vec::new()),
        }
    }

    fn where_(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| "AWS".into())
    }

    async fn client(&self, key_id: &str) -> aws_sdk_kms::Client {
        let client = self.client.get_or_init(|| async {
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30).min(self.budget))
                .operation_timeout(self.budget)
                .build();
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .timeout_config(timeouts);
            if let Some(region) = arn_region(key_id) {
                loader = loader.region(aws_config::Region::new(region));
            }
            let sdk = loader.load().await;
            let mut conf = aws_sdk_kms::config::Builder::from(&sdk);
            // Builder::from falls back on AWS_ENDPOINT_URL (the S3 endpoint): only
            // the KMS endpoint counts.
            conf.set_endpoint_url(self.endpoint.clone());
            if sdk.region().is_none() {
                conf = conf.region(aws_config::Region::new("us-east-1"));
            }
            aws_sdk_kms::Client::from_conf(conf.build())
        });
        client.await.clone()
    }

    /// The engine's error for a failed `action` on `key_id`.
    fn failure<E, R>(&self, action: &'static str, key_id: &str, err: SdkError<E, R>) -> KmsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let (reason, denied) = match &err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let code = e.code().unwrap_or("an error");
                (format!("{code}: {}", e.message().unwrap_or("")), true)
            }
            SdkError::TimeoutError(_) => (
                format!(
                    "no answer from KMS at {} in {:?}",
                    self.where_(),
                    self.budget
                ),
                false,
            ),
            SdkError::DispatchFailure(_) => (
                format!("cannot reach KMS at {}: {}", self.where_(), causes(&err)),
                false,
            ),
            _ => (causes(&err), false),
        };
        KmsError {
            action,
            key_id: key_id.to_string(),
            reason: reason.replace('\n', " ").trim_end().to_string(),
            denied,
        }
    }
}

/// An error and its sources, as `a: b: c` (a source its parent already says
/// is left out).
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The context as the SDK takes it.
fn context_map(context: &KmsContext) -> std::collections::HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// A KMS answer that lacks its `what`.
fn answered_without(action: &'static str, key_id: &str, what: &str) -> KmsError {
    KmsError {
        action,
        key_id: key_id.to_string(),
        reason: format!("KMS answered without {what}"),
        denied: false,
    }
}

#[async_trait::async_trait]
impl KeyWrapper for AwsKms {
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        let out = self
            .client(key_id)
            .await
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| self.failure("Encrypt", key_id, e))?;
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| answered_without("Encrypt", key_id, "a ciphertext"))?;
        Ok(blob.into_inner())
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &KmsContext,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let known = self.unwrapped.lock().expect("KMS cache lock").clone();
        let seen = known
            .into_iter()
            .find(|(c, ctx, _)| c == ciphertext && ctx == context);
        if let Some((_, _, key)) = seen {
            return Ok(key);
        }
        let out = self
            .client(key_id)
            .await
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| self.failure("Decrypt", key_id, e))?;
        let plain = out
            .plaintext
            .ok_or_else(|| answered_without("Decrypt", key_id, "a plaintext"))?;
        let key = Zeroizing::new(plain.into_inner());
        let mut cache = self.unwrapped.lock().expect("KMS cache lock");
        cache.push((ciphertext.to_vec(), context.clone(), key.clone()));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arn_names_its_region() {
        let arn = "arn:aws:kms:eu-west-3:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(arn_region(arn).as_deref(), Some("eu-west-3"));
        assert_eq!(arn_region("alias/coffer"), None);
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
    }
}
