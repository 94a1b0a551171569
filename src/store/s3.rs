//! S3-compatible object store (AWS, MinIO, Garage, Ceph, s3s, ...).
//!
//! Everything S3-specific stays here: custom endpoint and path style, multipart
//! uploads above a threshold (parts in parallel, aborted on failure), server-side
//! encryption, checksum mode, timeouts and retries. Visibility is kept as the object
//! metadata `x-amz-meta-visibility`.
//!
//! Streams of unknown length (HTTP uploads) are spooled to a local temp file first:
//! that gives the upload a known length, lets parts go in parallel and makes every
//! part retryable by the SDK.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_smithy_types::byte_stream::Length;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::bucket_cors::CorsRule;
use super::{
    ByteStream, ObjectInfo, ObjectKey, PutOptions, Store, StoreError, Visibility, write_limited,
};
use crate::config::{ChecksumMode, S3Config, SseMode};

const VISIBILITY_META: &str = "visibility";
/// Whose object it is (`x-amz-meta-owner`), when anyone's.
const OWNER_META: &str = "owner";
/// Readiness checks must answer quickly even when the store hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    sse: Option<ServerSideEncryption>,
    multipart_threshold: u64,
    part_size: u64,
    part_concurrency: usize,
    spool_dir: PathBuf,
}

impl S3Store {
    /// `spool_dir` holds request bodies while they are uploaded.
    pub async fn open(config: &S3Config, spool_dir: &Path) -> Result<S3Store, StoreError> {
        let bucket = config
            .bucket
            .clone()
            .ok_or_else(|| StoreError::Unavailable("s3.bucket is not set".into()))?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "media-node-config",
            ));
        }
        let shared = loader.load().await;
        let checksum = match config.checksum {
            ChecksumMode::WhenSupported => RequestChecksumCalculation::WhenSupported,
            ChecksumMode::WhenRequired => RequestChecksumCalculation::WhenRequired,
            ChecksumMode::Auto if config.endpoint.is_some() => {
                RequestChecksumCalculation::WhenRequired
            }
            ChecksumMode::Auto => RequestChecksumCalculation::WhenSupported,
        };
        let validation = match checksum {
            RequestChecksumCalculation::WhenRequired => ResponseChecksumValidation::WhenRequired,
            _ => ResponseChecksumValidation::WhenSupported,
        };
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .request_checksum_calculation(checksum)
            .response_checksum_validation(validation)
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .operation_attempt_timeout(Duration::from_millis(config.operation_timeout_ms))
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let spool_dir = spool_dir.to_path_buf();
        tokio::fs::create_dir_all(&spool_dir).await?;
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket,
            prefix: config
                .prefix
                .as_deref()
                .map(|p| format!("{}/", p.trim_matches('/')))
                .filter(|p| p != "/")
                .unwrap_or_default(),
            sse: match config.sse {
                SseMode::Aes256 => Some(ServerSideEncryption::Aes256),
                SseMode::AwsKms => Some(ServerSideEncryption::AwsKms),
                SseMode::None => None,
            },
            multipart_threshold: config.multipart_threshold_bytes,
            part_size: config.part_size_bytes,
            part_concurrency: config.part_concurrency,
            spool_dir,
        })
    }

    /// Starts reading an object, refusing it before its body is read when it is
    /// larger than `max_bytes`.
    async fn get_checked(
        &self,
        key: &ObjectKey,
        max_bytes: u64,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| sdk_error(key, e))?;
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                limit: max_bytes,
            });
        }
        Ok(out)
    }

    fn full_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// The user metadata an object is written with: its visibility and owner.
    fn metadata(opts: &PutOptions) -> Option<std::collections::HashMap<String, String>> {
        let mut meta = std::collections::HashMap::new();
        meta.insert(
            VISIBILITY_META.to_string(),
            visibility_str(opts.visibility).to_string(),
        );
        if let Some(owner) = &opts.owner {
            meta.insert(OWNER_META.to_string(), owner.clone());
        }
        Some(meta)
    }

    fn visibility_of(meta: Option<&std::collections::HashMap<String, String>>) -> Visibility {
        match meta
            .and_then(|m| m.get(VISIBILITY_META))
            .map(String::as_str)
        {
            Some("public") => Visibility::Public,
            _ => Visibility::Private,
        }
    }

    async fn put_single(
        &self,
        key: &ObjectKey,
        body: SdkBody,
        opts: &PutOptions,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(body)
            .set_metadata(Self::metadata(opts))
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone());
        if let Some(sse) = &self.sse {
            req = req.server_side_encryption(sse.clone());
        }
        req.send().await.map_err(|e| sdk_error(key, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        src: &Path,
        size: u64,
        opts: &PutOptions,
    ) -> Result<(), StoreError> {
        let full_key = self.full_key(key);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .set_metadata(Self::metadata(opts))
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone());
        if let Some(sse) = &self.sse {
            create = create.server_side_encryption(sse.clone());
        }
        let created = create.send().await.map_err(|e| sdk_error(key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Unavailable("store returned no upload id".into()))?
            .to_string();

        let result = self
            .upload_parts(key, &full_key, &upload_id, src, size)
            .await;
        match result {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full_key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| sdk_error(key, e))?;
                Ok(())
            }
            Err(err) => {
                // Leave no orphaned parts behind (they are billed and invisible).
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full_key)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(key = %key, error = %abort, "could not abort multipart upload");
                }
                Err(err)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        full_key: &str,
        upload_id: &str,
        src: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let part_count = size.div_ceil(self.part_size);
        let uploads = (0..part_count).map(|index| {
            let offset = index * self.part_size;
            let length = self.part_size.min(size - offset);
            let part_number = (index + 1) as i32;
            async move {
                let body = SdkBody::read_from()
                    .path(src)
                    .offset(offset)
                    .length(Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full_key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| sdk_error(key, e))?;
                Ok::<_, StoreError>(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                )
            }
        });
        let mut parts: Vec<CompletedPart> = futures_util::stream::iter(uploads)
            .buffer_unordered(self.part_concurrency)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }
}

fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

/// Maps SDK errors: a missing object is `NotFound`; everything else (network,
/// timeouts, 5xx, throttling, refused credentials) is `Unavailable`, which callers
/// treat as transient.
fn sdk_error<E, R>(key: &ObjectKey, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(service) = &err {
        let code = service.err().code().unwrap_or_default();
        if matches!(code, "NoSuchKey" | "NotFound") {
            return StoreError::NotFound(key.to_string());
        }
    }
    let detail = match &err {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("")
        ),
        other => format!(
            "{}",
            aws_smithy_types::error::display::DisplayErrorContext(other)
        ),
    };
    StoreError::Unavailable(detail)
}

impl S3Store {
    /// The bucket's CORS rules (`GetBucketCors`), `None` when it has none.
    pub async fn cors_rules(&self) -> Result<Option<Vec<CorsRule>>, StoreError> {
        let answer = self
            .client
            .get_bucket_cors()
            .bucket(&self.bucket)
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchCORSConfiguration") => return Ok(None),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "bucket `{}` CORS rules: {}",
                    self.bucket,
                    aws_smithy_types::error::display::DisplayErrorContext(e)
                )));
            }
        };
        let rules = out
            .cors_rules()
            .iter()
            .map(|r| CorsRule {
                allowed_origins: r.allowed_origins().to_vec(),
                allowed_methods: r.allowed_methods().to_vec(),
                allowed_headers: r.allowed_headers().to_vec(),
                expose_headers: r.expose_headers().to_vec(),
            })
            .collect();
        Ok(Some(rules))
    }
}

#[async_trait]
impl Store for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put_file(
        &self,
        key: &ObjectKey,
        src: &Path,
        opts: &PutOptions,
    ) -> Result<u64, StoreError> {
        let size = tokio::fs::metadata(src).await?.len();
        if size >= self.multipart_threshold {
            self.put_multipart(key, src, size, opts).await?;
        } else {
            let body = SdkBody::from_path(src)
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            self.put_single(key, body, opts).await?;
        }
        Ok(size)
    }

    async fn put_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<(), StoreError> {
        self.put_single(key, SdkBody::from(data), opts).await
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        max_bytes: u64,
        opts: &PutOptions,
    ) -> Result<u64, StoreError> {
        let dir = self.spool_dir.clone();
        let (file, temp) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".upload-")
                .tempfile_in(dir)
                .map(|t| t.into_parts())
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        // A spool file, removed when `temp` drops: no need to make it durable.
        let written =
            write_limited(key, body, tokio::fs::File::from_std(file), max_bytes, false).await?;
        self.put_file(key, &temp, opts).await?;
        Ok(written)
    }

    async fn get_to_file(
        &self,
        key: &ObjectKey,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let out = self.get_checked(key, max_bytes).await?;
        let mut reader = out.body.into_async_read();
        let mut file = tokio::fs::File::create(dest).await?;
        let copied = tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading `{key}`: {e}")))?;
        file.flush().await?;
        Ok(copied)
    }

    async fn get_bytes(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StoreError> {
        let out = self.get_checked(key, max_bytes).await?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading `{key}`: {e}")))?;
        Ok(data.into_bytes())
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                content_type: out.content_type().map(str::to_string),
                cache_control: out.cache_control().map(str::to_string),
                visibility: Self::visibility_of(out.metadata()),
                owner: out.metadata().and_then(|m| m.get(OWNER_META)).cloned(),
            })),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Ok(None),
            Err(e) => match sdk_error(key, e) {
                StoreError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| sdk_error(key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let full_prefix = format!("{}{}", self.prefix, prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::Unavailable(format!("listing: {e}")))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(rel) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                let Ok(key) = ObjectKey::parse(rel) else {
                    continue;
                };
                // Listing does not return metadata; visibility needs a HEAD.
                if let Some(info) = self.head(&key).await? {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let quick = aws_sdk_s3::config::Builder::default()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CHECK_TIMEOUT)
                    .operation_timeout(CHECK_TIMEOUT)
                    .build(),
            );
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .config_override(quick)
            .send()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "bucket `{}`: {}",
                    self.bucket,
                    aws_smithy_types::error::display::DisplayErrorContext(e)
                ))
            })?;
        Ok(())
    }
}
