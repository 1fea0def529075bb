//! Bucket administration for the hcs3-style commands (`create`, `delete`,
//! `list`): not part of [`ObjectStore`](super::ObjectStore), which works inside a
//! bucket.

use super::s3::S3Store;
use crate::error::StoreError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
};

/// What `create_bucket` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// The bucket existed and belongs to these credentials.
    AlreadyOwned,
}

fn describe<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (u16, String) {
    match e {
        SdkError::ServiceError(se) => (
            se.raw().status().as_u16(),
            format!(
                "{} {}",
                se.err().code().unwrap_or(""),
                se.err().message().unwrap_or("")
            )
            .trim()
            .to_string(),
        ),
        other => (0, format!("{other:?}")),
    }
}

fn admin_error(bucket: &str, what: &str, status: u16, detail: String) -> StoreError {
    match status {
        403 => StoreError::Denied {
            detail: format!(
                "access denied to bucket {bucket} — check credentials ({what}: {detail})"
            ),
        },
        500..=599 | 429 => StoreError::Transient {
            detail: format!("{what} {bucket}: {detail}"),
            cause: crate::error::Transient::of_status(status),
        },
        0 => StoreError::Unusable {
            detail: format!("{what} {bucket}: cannot reach the store: {detail}"),
        },
        _ => StoreError::Rejected {
            detail: format!("{what} {bucket}: HTTP {status} {detail}"),
        },
    }
}

impl S3Store {
    /// Creates the bucket (in the client's region).
    pub async fn create_bucket(&self) -> Result<Created, StoreError> {
        let mut req = self.client().create_bucket().bucket(self.bucket());
        let region = self
            .client()
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        if !region.is_empty() && region != "us-east-1" && !self.has_custom_endpoint() {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(Created::New),
            Err(e) => match describe(&e) {
                (_, d) if d.contains("BucketAlreadyOwnedByYou") => Ok(Created::AlreadyOwned),
                (409, d) if d.contains("BucketAlreadyExists") => Err(StoreError::Rejected {
                    detail: format!("bucket name {} is taken by another account", self.bucket()),
                }),
                (status, d) => Err(admin_error(self.bucket(), "create bucket", status, d)),
            },
        }
    }

    /// Blocks public access and denies non-TLS requests. Returns one note per
    /// hardening the server does not support (e.g. Garage), which is skipped.
    pub async fn harden(&self) -> Result<Vec<String>, StoreError> {
        let mut notes = Vec::new();
        let block = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        let r = self
            .client()
            .put_public_access_block()
            .bucket(self.bucket())
            .public_access_block_configuration(block)
            .send()
            .await;
        self.hardening_result(r.map(|_| ()), "public access block", &mut notes)?;
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [format!("arn:aws:s3:::{}", self.bucket()), format!("arn:aws:s3:::{}/*", self.bucket())],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}
            }]
        });
        let r = self
            .client()
            .put_bucket_policy()
            .bucket(self.bucket())
            .policy(policy.to_string())
            .send()
            .await;
        self.hardening_result(r.map(|_| ()), "TLS-only bucket policy", &mut notes)?;
        Ok(notes)
    }

    fn hardening_result<E: ProvideErrorMetadata + std::fmt::Debug>(
        &self,
        r: Result<(), SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
        what: &str,
        notes: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) => match describe(&e) {
                (400 | 404 | 405 | 501, d) => {
                    notes.push(format!(
                        "the server does not support the {what} API; skipped ({d})"
                    ));
                    Ok(())
                }
                (status, d) => Err(admin_error(self.bucket(), what, status, d)),
            },
        }
    }

    /// Deletes the (empty) bucket.
    pub async fn delete_bucket(&self) -> Result<(), StoreError> {
        match self
            .client()
            .delete_bucket()
            .bucket(self.bucket())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match describe(&e) {
                (409, d) if d.contains("BucketNotEmpty") => Err(StoreError::Rejected {
                    detail: format!("bucket {} is not empty", self.bucket()),
                }),
                (404, _) => Err(StoreError::Unusable {
                    detail: format!("bucket {} does not exist", self.bucket()),
                }),
                (status, d) => Err(admin_error(self.bucket(), "delete bucket", status, d)),
            },
        }
    }

    /// Names of the buckets these credentials can see.
    pub async fn list_buckets(&self) -> Result<Vec<String>, StoreError> {
        match self.client().list_buckets().send().await {
            Ok(out) => Ok(out
                .buckets()
                .iter()
                .filter_map(|b| b.name().map(str::to_string))
                .collect()),
            Err(e) => {
                let (status, d) = describe(&e);
                Err(admin_error("(all)", "list buckets", status, d))
            }
        }
    }
}
