//! S3 and S3-compatible servers (AWS S3, Garage, ...), through aws-sdk-s3.
//!
//! - Credentials: the standard chain (environment, profiles, SSO, instance roles);
//!   keys saved by `coffer setstore` are used only when the environment has none.
//! - Endpoint: `--endpoint` or `AWS_ENDPOINT_URL[_S3]`, path-style for custom
//!   endpoints. Several comma-separated endpoints of one cluster give one client
//!   each ([`S3Store::connect_each`]), which [`super::FailoverStore`] joins; plain `http://` only to loopback unless explicitly allowed (and
//!   never with SSE-C keys, which travel in headers).
//! - Integrity: the SDK's default extra checksum on every request breaks some
//!   servers, so the SDK computes checksums only when an operation requires one,
//!   and every PUT carries one explicit CRC32C header (`x-amz-checksum-crc32c`,
//!   computed here) that the server verifies. Payloads are not SHA-256-signed
//!   (`UNSIGNED-PAYLOAD`): the CRC32C and coffer's own AEAD cover integrity, and a
//!   second pass over every byte is saved.
//! - Retries are *not* done here (the SDK's are disabled): [`super::RetryStore`]
//!   wraps this store. Stalled transfers are cut — downloads by the SDK's
//!   stalled-stream protection, uploads by [`super::upload_body`] — and surface as
//!   transient errors.

//! - Bandwidth limits ([`super::throttle`]) are applied here, inside the bodies:
//!   each PUT frame waits for its reservation, each GET piece is reserved as it
//!   arrives. This store is therefore never wrapped in a `ThrottledStore`.
//! - Errors are mapped by meaning into [`StoreError`]; 403 and credential errors say
//!   which bucket and what to check.

use super::throttle::{Bandwidth, throttle_pieces};
use super::upload_body::{Progress, WatchedBody, watch};
use super::{ObjectMeta, ObjectStore, Pieces, validate_bucket};
use crate::error::{StoreError, Transient};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use base64::Engine as _;
use bytes::Bytes;
use std::fmt;
use std::ops::Range;
use std::time::Duration;
use zeroize::Zeroizing;

/// An SSE-C key: 32 bytes, sent base64 with its MD5 on every object request.
#[derive(Clone)]
pub struct SseCustomerKey {
    key_b64: Zeroizing<String>,
    md5_b64: String,
}

impl fmt::Debug for SseCustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SseCustomerKey(md5 {})", self.md5_b64)
    }
}

impl SseCustomerKey {
    /// From a key file: exactly 32 raw bytes, or 64 hex characters (surrounding
    /// whitespace ignored).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, String> {
        let raw: Zeroizing<Vec<u8>> = if bytes.len() == 32 {
            Zeroizing::new(bytes.to_vec())
        } else {
            let text =
                std::str::from_utf8(bytes).map_err(|_| "not 32 raw bytes nor 64 hex characters")?;
            let decoded =
                hex::decode(text.trim()).map_err(|_| "not 32 raw bytes nor 64 hex characters")?;
            if decoded.len() != 32 {
                return Err("an SSE-C key is 32 bytes (64 hex characters)".into());
            }
            Zeroizing::new(decoded)
        };
        use md5::Digest;
        let md5 = md5::Md5::digest(&raw[..]);
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(SseCustomerKey {
            key_b64: Zeroizing::new(b64.encode(&raw[..])),
            md5_b64: b64.encode(md5),
        })
    }
}

/// Server-side encryption added on top of coffer's own.
#[derive(Debug, Clone, Default)]
pub enum Sse {
    #[default]
    None,
    /// SSE-C: the server encrypts with a key the client sends every time.
    Customer(SseCustomerKey),
    /// SSE-KMS with this key id (or the bucket's default KMS key if empty).
    Kms { key_id: String },
}

/// How to reach a bucket.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// Custom endpoint; else `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`; else AWS.
    pub endpoint: Option<String>,
    /// Region; else the standard variables and profiles; else `us-east-1`.
    pub region: Option<String>,
    /// Allow plain http to a non-loopback endpoint.
    pub allow_http: bool,
    pub sse: Sse,
    /// Keys from `coffer setstore`, used when the environment has none.
    pub saved_credentials: Option<(String, Zeroizing<String>)>,
    /// A transfer with no progress for this long is cut (and retried).
    pub stall_grace: Duration,
    /// Upper bound of one attempt of one request.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Upload and download limits, shared with every store of the process.
    pub bandwidth: Bandwidth,
}

impl S3Options {
    pub fn new(bucket: &str, prefix: &str) -> Self {
        S3Options {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            allow_http: false,
            sse: Sse::None,
            saved_credentials: None,
            stall_grace: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            bandwidth: Bandwidth::unlimited(),
        }
    }
}

/// A bucket (and prefix) as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    /// The `Date` of the last response, and when it arrived.
    date: DateSeen,
    custom_endpoint: bool,
    /// The endpoint URL, or `AWS`.
    endpoint: String,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    sse: Sse,
    stall_grace: Duration,
    bandwidth: Bandwidth,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Store {
    /// Every page of a ListObjectsV2 of `prefix` (the SDK's paginator), each
    /// given to `page`.
    async fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<String>,
        delimiter: Option<&str>,
        mut page: impl FnMut(ListObjectsV2Output),
    ) -> Result<(), StoreError> {
        let ctx = self.errors("LIST", prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .set_start_after(start_after)
            .set_delimiter(delimiter.map(str::to_string))
            .into_paginator()
            .send();
        while let Some(resp) = pages.next().await {
            page(resp.map_err(|e| ctx.map(e))?);
        }
        Ok(())
    }

    /// The objects under `prefix`, from after `after` if given.
    async fn list_from(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        // A start-after at or below the prefix skips nothing the prefix holds, and
        // Garage answers an empty listing to one equal to the prefix: leave it out.
        let start_after = after.filter(|a| *a > prefix).map(|k| self.full_key(k));
        let mut out = Vec::new();
        self.list_pages(prefix, start_after, None, |resp| {
            for obj in resp.contents() {
                let Some(k) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: k.to_string(),
                    size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
        })
        .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The common prefixes of `prefix` with the delimiter `/`.
    async fn list_common_prefixes(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        self.list_pages(prefix, None, Some("/"), |resp| {
            let dirs = resp.common_prefixes().iter().filter_map(|p| p.prefix());
            out.extend(
                dirs.filter_map(|p| p.strip_prefix(&self.prefix))
                    .map(str::to_string),
            );
        })
        .await?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Builds the client (no request is made).
    pub async fn connect(opts: S3Options) -> Result<S3Store, StoreError> {
        validate_bucket(&opts.bucket)?;
        let endpoint = endpoints(opts.endpoint.as_deref())?.into_iter().next();
        if let Some(ep) = &endpoint {
            check_endpoint(ep, opts.allow_http, matches!(opts.sse, Sse::Customer(_)))?;
        }
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(opts.connect_timeout)
            .operation_attempt_timeout(opts.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(timeouts)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(opts.stall_grace)
                    .build(),
            );
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if env_nonempty("AWS_ACCESS_KEY_ID").is_none()
            && let Some((id, secret)) = &opts.saved_credentials
        {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.as_str(),
                None,
                None,
                "coffer-setstore",
            ));
        }
        let sdk = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if sdk.region().is_none() {
            conf = conf.region(Region::new("us-east-1"));
        }
        let date = DateSeen::default();
        conf = conf.interceptor(date.clone());
        let custom_endpoint = endpoint.is_some();
        if let Some(ep) = &endpoint {
            conf = conf.endpoint_url(ep).force_path_style(true);
        }
        let prefix = if opts.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", opts.prefix)
        };
        Ok(S3Store {
            date,
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            custom_endpoint,
            endpoint: endpoint.unwrap_or_else(|| "AWS".into()),
            bucket: opts.bucket,
            prefix,
            sse: opts.sse,
            stall_grace: opts.stall_grace,
            bandwidth: opts.bandwidth,
        })
    }

    /// One client per endpoint when several are configured (comma-separated, see
    /// [`endpoints`]), in their order; else the one client of [`S3Store::connect`].
    pub async fn connect_each(opts: S3Options) -> Result<Vec<S3Store>, StoreError> {
        let list = endpoints(opts.endpoint.as_deref())?;
        if list.len() < 2 {
            return Ok(vec![S3Store::connect(opts).await?]);
        }
        let mut stores = Vec::with_capacity(list.len());
        for ep in list {
            stores.push(
                S3Store::connect(S3Options {
                    endpoint: Some(ep),
                    ..opts.clone()
                })
                .await?,
            );
        }
        Ok(stores)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The endpoint requests go to (`AWS` for AWS's own).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the endpoint's port accepts a TCP connection within `within` (AWS's
    /// own endpoint is taken as reachable). Bucket administration, which has no
    /// failover of its own, goes to the first reachable endpoint of a list.
    pub async fn reachable(&self, within: Duration) -> bool {
        let Ok(uri) = self.endpoint.parse::<http::Uri>() else {
            return true;
        };
        let Some(host) = uri.host() else {
            return true;
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let host = host.trim_matches(|c| c == '[' || c == ']');
        let connect = tokio::net::TcpStream::connect((host, port));
        matches!(tokio::time::timeout(within, connect).await, Ok(Ok(_)))
    }

    /// Whether requests go to a custom endpoint (not AWS).
    pub fn has_custom_endpoint(&self) -> bool {
        self.custom_endpoint
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn errors(&self, op: &'static str, key: &str) -> ErrorContext {
        ErrorContext {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            sse_c: matches!(self.sse, Sse::Customer(_)),
        }
    }

    /// Sends a GET; the body is read by the caller.
    async fn open_object(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(usize, ByteStream), StoreError> {
        let ctx = self.errors("GET", key);
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some(r) = &range {
            if r.start >= r.end {
                return Err(StoreError::Rejected {
                    detail: format!("empty range {r:?} for {key}"),
                });
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        if let Sse::Customer(k) = &self.sse {
            req = req
                .sse_customer_algorithm("AES256")
                .sse_customer_key(k.key_b64.as_str())
                .sse_customer_key_md5(&k.md5_b64);
        }
        let resp = req.send().await.map_err(|e| ctx.map(e))?;
        let len = resp
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        Ok((len, resp.body))
    }

    async fn get_object(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let (len, mut body) = self.open_object(key, range).await?;
        let mut buf = bytes::BytesMut::with_capacity(len);
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| interrupted(key, &e))?;
            self.bandwidth.download.acquire(frame.len() as u64).await;
            buf.extend_from_slice(&frame);
        }
        Ok(buf.freeze())
    }
}

/// A response body that broke off: worth retrying.
fn interrupted(key: &str, e: &dyn fmt::Display) -> StoreError {
    StoreError::Transient {
        detail: format!("GET {key}: body interrupted: {e}"),
        cause: Transient::Reset,
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let ctx = self.errors("PUT", key);
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let b64 = base64::engine::general_purpose::STANDARD;
        let crc = b64.encode(crc32c::crc32c(&data).to_be_bytes());
        let progress = Progress::new();
        let body = ByteStream::from_body_1_x(WatchedBody::new(
            data,
            progress.clone(),
            Some(self.bandwidth.upload.clone()),
        ));
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(len)
            .checksum_crc32_c(crc)
            .body(body);
        match &self.sse {
            Sse::None => {}
            Sse::Customer(k) => {
                req = req
                    .sse_customer_algorithm("AES256")
                    .sse_customer_key(k.key_b64.as_str())
                    .sse_customer_key_md5(&k.md5_b64);
            }
            Sse::Kms { key_id } => {
                req = req.server_side_encryption(ServerSideEncryption::AwsKms);
                if !key_id.is_empty() {
                    req = req.ssekms_key_id(key_id);
                }
            }
        }
        let send = req.customize().disable_payload_signing().send();
        match watch(send, &progress, self.stall_grace).await {
            Some(r) => r.map(|_| ()).map_err(|e| ctx.map(e)),
            None => Err(StoreError::Transient {
                detail: format!(
                    "PUT s3://{}/{}: transfer stalled (no progress for {:?})",
                    self.bucket, key, self.stall_grace
                ),
                cause: Transient::Stall,
            }),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_object(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.get_object(key, Some(range)).await
    }

    async fn get_range_stream(&self, key: &str, range: Range<u64>) -> Result<Pieces, StoreError> {
        let (_, body) = self.open_object(key, Some(range)).await?;
        let pieces =
            futures::stream::unfold((body, key.to_string()), |(mut body, key)| async move {
                let piece = body.next().await?.map_err(|e| interrupted(&key, &e));
                Some((piece, (body, key)))
            });
        Ok(throttle_pieces(
            Box::pin(pieces),
            self.bandwidth.download.clone(),
        ))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.list_from(prefix, None).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.list_from(prefix, Some(after)).await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list_common_prefixes(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let ctx = self.errors("DELETE", key);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match ctx.map(e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn clock_ms(&self) -> Option<u64> {
        if self.date.get().is_none() {
            // Any response carries a Date; a listing of one key is the cheapest.
            let _ = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .max_keys(1)
                .send()
                .await;
        }
        self.date.get()
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
            .trim_end_matches('/')
            .to_string()
    }
}

/// The endpoints of one cluster: `configured` (`--endpoint`), else
/// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`; each may list several URLs,
/// comma-separated (spaces around them ignored). Empty when none is set (AWS).
pub fn endpoints(configured: Option<&str>) -> Result<Vec<String>, StoreError> {
    let Some(value) = configured
        .map(str::to_string)
        .filter(|v| !v.is_empty())
        .or_else(|| env_nonempty("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env_nonempty("AWS_ENDPOINT_URL"))
    else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = value.split(',').map(|e| e.trim().to_string()).collect();
    if list.iter().any(String::is_empty) {
        return Err(StoreError::Unusable {
            detail: format!("endpoint list {value:?} has an empty entry"),
        });
    }
    Ok(list)
}

/// Plain http only to loopback (unless allowed), and never with SSE-C elsewhere.
pub fn check_endpoint(endpoint: &str, allow_http: bool, sse_c: bool) -> Result<(), StoreError> {
    let uri: http::Uri = endpoint.parse().map_err(|e| StoreError::Unusable {
        detail: format!("invalid endpoint {endpoint:?}: {e}"),
    })?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = uri
                .host()
                .unwrap_or("")
                .trim_matches(|c| c == '[' || c == ']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else if sse_c {
                Err(StoreError::Unusable {
                    detail: format!(
                        "refusing to send an SSE-C key over plain http to {host}; use an https endpoint"
                    ),
                })
            } else if allow_http {
                Ok(())
            } else {
                Err(StoreError::Unusable {
                    detail: format!(
                        "refusing plain http to {host} (not loopback); use https or --allow-http"
                    ),
                })
            }
        }
        _ => Err(StoreError::Unusable {
            detail: format!(
                "endpoint {endpoint:?} must start with https:// (or http:// on loopback)"
            ),
        }),
    }
}

/// Whether the request failed because no credentials could be loaded: the SDK reports
/// that as a construction or (for the instance-metadata provider) dispatch failure.
/// Retrying cannot help, and waiting out the budget would hide a configuration error.
fn is_credential_failure(err: &dyn std::error::Error) -> bool {
    let chain = source_chain(err).to_lowercase();
    chain.contains("loading credentials") || chain.contains("no credentials")
}

/// Records the `Date` header of every S3 response (the server's clock, to a
/// second) with the instant it arrived, so the store's time can be read later.
#[derive(Debug, Clone, Default)]
struct DateSeen(std::sync::Arc<std::sync::Mutex<Option<(u64, std::time::Instant)>>>);

impl DateSeen {
    /// The store's clock now: the last `Date` plus the time since it arrived.
    fn get(&self) -> Option<u64> {
        let seen = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (ms, at) = seen?;
        let since = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(ms.saturating_add(since))
    }
}

impl aws_sdk_s3::config::Intercept for DateSeen {
    fn name(&self) -> &'static str {
        "coffer-date-seen"
    }

    fn read_before_deserialization(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        if let Some(ms) = date {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((ms, std::time::Instant::now()));
        }
        Ok(())
    }
}

/// What a failed request was, to turn an SDK error into a [`StoreError`].
#[derive(Debug)]
struct ErrorContext {
    op: &'static str,
    bucket: String,
    key: String,
    sse_c: bool,
}

impl ErrorContext {
    fn map<E>(&self, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let what = format!("{} s3://{}/{}", self.op, self.bucket, self.key);
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                self.classify(status, se.err().code(), se.err().message(), &what)
            }
            SdkError::ResponseError(re) => {
                let status = re.raw().status().as_u16();
                if status >= 300 {
                    self.classify(status, None, None, &what)
                } else {
                    transient(&what, &err)
                }
            }
            SdkError::TimeoutError(_) => StoreError::Transient {
                detail: format!("{what}: timed out"),
                cause: Transient::Timeout,
            },
            SdkError::DispatchFailure(_) if is_credential_failure(&err) => {
                self.no_credentials(&err)
            }
            SdkError::DispatchFailure(d) => {
                if d.is_user() {
                    StoreError::Unusable {
                        detail: format!("{what}: {}", source_chain(&err)),
                    }
                } else {
                    transient(&what, source_chain(&err))
                }
            }
            SdkError::ConstructionFailure(_) if is_credential_failure(&err) => {
                self.no_credentials(&err)
            }
            SdkError::ConstructionFailure(_) => StoreError::Unusable {
                detail: format!("{what}: {}", source_chain(&err)),
            },
            _ => transient(&what, source_chain(&err)),
        }
    }

    fn no_credentials(&self, err: &dyn std::error::Error) -> StoreError {
        StoreError::Denied {
            detail: format!(
                "no usable AWS credentials for s3://{}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, use a profile, or run `coffer setstore` ({})",
                self.bucket,
                source_chain(err)
            ),
        }
    }

    fn classify(
        &self,
        status: u16,
        code: Option<&str>,
        message: Option<&str>,
        what: &str,
    ) -> StoreError {
        let code = code.unwrap_or("");
        let msg = message.unwrap_or("");
        let detail = || {
            format!("{what}: HTTP {status} {code} {msg}")
                .trim_end()
                .to_string()
        };
        if matches!(status, 400 | 401 | 403)
            && let Some(e) = self.refused(status, code, msg, &detail())
        {
            return e;
        }
        match status {
            404 if code == "NoSuchBucket" => StoreError::Unusable {
                detail: format!(
                    "bucket {} does not exist (create it with `coffer create {}`)",
                    self.bucket, self.bucket
                ),
            },
            404 => StoreError::NotFound {
                key: self.key.clone(),
            },
            301 | 307 => StoreError::Unusable {
                detail: format!(
                    "bucket {} is in another region; set AWS_REGION ({})",
                    self.bucket,
                    detail()
                ),
            },
            429 | 503 => StoreError::Transient {
                detail: detail(),
                cause: Transient::SlowDown,
            },
            500..=599 => StoreError::Transient {
                detail: detail(),
                cause: if code == "SlowDown" {
                    Transient::SlowDown
                } else {
                    Transient::ServerError
                },
            },
            _ => StoreError::Rejected { detail: detail() },
        }
    }

    /// A 400/401/403 that means a missing or wrong SSE-C key, or refused
    /// credentials or permissions; `None` for other 400s.
    fn refused(&self, status: u16, code: &str, msg: &str, detail: &str) -> Option<StoreError> {
        let credential_code = matches!(
            code,
            "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AuthorizationHeaderMalformed"
                | "ExpiredToken"
                | "InvalidToken"
                | "AccessDenied"
        );
        let reading = self.op == "GET";
        let encryption_hint = msg.to_lowercase().contains("encrypt") || code.contains("Encryption");
        let bucket = &self.bucket;
        let detail = if reading
            && !self.sse_c
            && status != 401
            && (encryption_hint || status == 400 && code.is_empty())
        {
            format!(
                "this repository needs its SSE-C key (--sse-c-key-file): {bucket} refused a plain read ({detail})"
            )
        } else if reading && self.sse_c && status != 401 && encryption_hint {
            format!("the SSE-C key does not match the objects in {bucket} ({detail})")
        } else if status == 403 {
            format!(
                "access denied to bucket {bucket} — check credentials and permissions ({detail})"
            )
        } else if credential_code {
            format!("bucket {bucket}: credentials refused — check credentials ({detail})")
        } else {
            return None;
        };
        Some(StoreError::Denied { detail })
    }
}

/// A connection that broke (reset, refused, cut off): worth retrying.
fn transient(what: &str, why: impl fmt::Display) -> StoreError {
    StoreError::Transient {
        detail: format!("{what}: {why}"),
        cause: Transient::Reset,
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback_and_never_sse_c_elsewhere() {
        assert!(check_endpoint("https://s3.example.com", false, true).is_ok());
        assert!(check_endpoint("http://127.0.0.1:3900", false, true).is_ok());
        assert!(check_endpoint("http://[::1]:3900", false, false).is_ok());
        assert!(check_endpoint("http://localhost:3900", false, false).is_ok());
        assert!(check_endpoint("http://10.0.0.5:3900", false, false).is_err());
        assert!(check_endpoint("http://10.0.0.5:3900", true, false).is_ok());
        assert!(check_endpoint("http://10.0.0.5:3900", true, true).is_err());
        assert!(check_endpoint("ftp://x", true, false).is_err());
    }

    #[test]
    fn endpoint_lists_split_on_commas() {
        let list = endpoints(Some("http://127.0.0.1:1, http://127.0.0.1:2")).unwrap();
        assert_eq!(list, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(
            endpoints(Some("https://s3.example.com")).unwrap(),
            ["https://s3.example.com"]
        );
        assert!(endpoints(Some("http://127.0.0.1:1,,http://127.0.0.1:2")).is_err());
        assert!(endpoints(Some("http://127.0.0.1:1,")).is_err());
    }

    #[test]
    fn sse_c_keys_from_raw_or_hex() {
        let raw = [7u8; 32];
        let a = SseCustomerKey::from_file_bytes(&raw).unwrap();
        let b =
            SseCustomerKey::from_file_bytes(format!("{}\n", hex::encode(raw)).as_bytes()).unwrap();
        assert_eq!(a.md5_b64, b.md5_b64);
        assert!(SseCustomerKey::from_file_bytes(b"short").is_err());
        assert!(!format!("{a:?}").contains(a.key_b64.as_str()));
    }

    fn ctx(op: &'static str, sse_c: bool) -> ErrorContext {
        ErrorContext {
            op,
            bucket: "b".into(),
            key: "k".into(),
            sse_c,
        }
    }

    #[test]
    fn statuses_map_by_meaning() {
        let c = ctx("PUT", false);
        assert!(matches!(
            c.classify(503, Some("SlowDown"), None, "x"),
            StoreError::Transient {
                cause: Transient::SlowDown,
                ..
            }
        ));
        assert!(matches!(
            c.classify(500, Some("InternalError"), None, "x"),
            StoreError::Transient {
                cause: Transient::ServerError,
                ..
            }
        ));
        assert!(matches!(
            c.classify(429, None, None, "x"),
            StoreError::Transient {
                cause: Transient::SlowDown,
                ..
            }
        ));
        let denied = c.classify(403, Some("AccessDenied"), None, "x");
        assert!(
            denied
                .to_string()
                .contains("access denied to bucket b — check credentials"),
            "{denied}"
        );
        assert!(!denied.is_retryable());
        assert!(matches!(
            c.classify(404, Some("NoSuchKey"), None, "x"),
            StoreError::NotFound { .. }
        ));
        assert!(matches!(
            c.classify(400, Some("SignatureDoesNotMatch"), None, "x"),
            StoreError::Denied { .. }
        ));
        assert!(matches!(
            c.classify(400, Some("InvalidArgument"), None, "x"),
            StoreError::Rejected { .. }
        ));
        let sse = ctx("GET", false).classify(
            400,
            Some("InvalidRequest"),
            Some("Object is encrypted"),
            "x",
        );
        assert!(sse.to_string().contains("needs its SSE-C key"), "{sse}");
    }
}
