//! Object storage: where inputs are read from and every output is written to.
//!
//! One [`Store`] trait with two implementations: [`fs::FsStore`] (the embedded
//! default, served read-only at `/media`) and [`s3::S3Store`] (any S3-compatible
//! store). Callers only see keys, [`PutOptions`] and [`StoreError`]; everything
//! about multipart uploads, path style, encryption or temp files stays inside the
//! implementations. All methods are async and never block the runtime.

pub mod bucket_cors;
pub mod fs;
mod key;
pub mod s3;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

pub use key::{INVALID_KEY_PREFIX, KeyError, ObjectKey};

use crate::config::{Config, StoreKind};

/// A stream of body chunks (e.g. an HTTP request body) to store.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Who may read an object through the node's own `/media` route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Uploads and work files: never served by the node (they may carry a creator's
    /// location or device data).
    #[default]
    Private,
    /// Published outputs (renditions, playlists, segments, stills).
    Public,
}

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub visibility: Visibility,
    /// Whose object it is (`shop:42`): kept with it, so owner-bound tokens
    /// see only their own.
    pub owner: Option<String>,
}

impl PutOptions {
    /// A published output with the content type its key's extension implies.
    pub fn public_for(key: &ObjectKey) -> Self {
        PutOptions {
            content_type: Some(content_type_for(key.as_str()).to_string()),
            cache_control: None,
            visibility: Visibility::Public,
            owner: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub visibility: Visibility,
    pub owner: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object `{0}` not found")]
    NotFound(String),
    #[error("object `{key}` is larger than the limit of {limit} bytes")]
    TooLarge { key: String, limit: u64 },
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),
    /// The key cannot sit beside an existing one: on the filesystem store,
    /// `a` and `a/b` cannot both be objects (one would be a file and a folder).
    #[error("object `{0}` collides with an existing key (`a` and `a/…` cannot both exist)")]
    Conflict(String),
    /// The store could not be reached or answered with an error; worth retrying.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Whether the operation may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Io(_))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `fs` or `s3`, for logs and health answers.
    fn kind(&self) -> &'static str;

    /// Copies a local file into the store. Readers never see a half-written object.
    async fn put_file(
        &self,
        key: &ObjectKey,
        src: &Path,
        opts: &PutOptions,
    ) -> Result<u64, StoreError>;

    async fn put_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<(), StoreError>;

    /// Streams a body of unknown length into the store, refusing it once it passes
    /// `max_bytes`. Nothing is visible under `key` unless the whole body arrived.
    async fn put_stream(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        max_bytes: u64,
        opts: &PutOptions,
    ) -> Result<u64, StoreError>;

    /// Copies an object to a local file (replacing it), refusing objects over
    /// `max_bytes` before reading them.
    async fn get_to_file(
        &self,
        key: &ObjectKey,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, StoreError>;

    /// Reads a small object into memory, refusing objects over `max_bytes`.
    async fn get_bytes(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StoreError>;

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// A cheap round trip proving the store is reachable and writable paths exist.
    async fn check(&self) -> Result<(), StoreError>;

    /// The file holding `key`, when the store keeps objects on local disk. Lets media
    /// pipelines read inputs in place instead of copying them.
    fn local_path(&self, _key: &ObjectKey) -> Option<PathBuf> {
        None
    }
}

pub type DynStore = Arc<dyn Store>;

/// Writes `body` to `file`, refusing it as soon as it passes `max_bytes`; `sync`
/// makes the data durable before returning. Returns the bytes written.
pub(crate) async fn write_limited(
    key: &ObjectKey,
    mut body: ByteStream,
    file: tokio::fs::File,
    max_bytes: u64,
    sync: bool,
) -> Result<u64, StoreError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                limit: max_bytes,
            });
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    if sync {
        file.get_ref().sync_data().await?;
    }
    Ok(written)
}

/// Opens the store the configuration selects.
pub async fn open(config: &Config) -> Result<DynStore, StoreError> {
    Ok(match config.store {
        StoreKind::Fs => Arc::new(fs::FsStore::open(&config.data_dir).await?),
        StoreKind::S3 => {
            let spool = config.data_dir.join("tmp").join("s3");
            Arc::new(s3::S3Store::open(&config.s3, &spool).await?)
        }
    })
}

/// The content type of a published object, from its key's extension.
pub fn content_type_for(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "mp4" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "gif" => "image/gif",
        "vtt" => "text/vtt; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_for_published_media() {
        assert_eq!(
            content_type_for("a/b/master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type_for("a/seg_00001.ts"), "video/mp2t");
        assert_eq!(content_type_for("a/720p.MP4"), "video/mp4");
        assert_eq!(content_type_for("a/noext"), "application/octet-stream");
    }
}
