//! Filesystem object store: the embedded default.
//!
//! Layout below the data dir:
//! - `objects/<key>`: object bytes;
//! - `objects.meta/<key>.json`: content type, cache control and visibility;
//! - `tmp/store/`: files being written. An object is written there, synced, and
//!   renamed into place, so readers never see half an object (same filesystem, so
//!   the rename is atomic).
//!
//! The metadata file is written before the data is renamed into place: an object
//! without metadata is private, so a crash between the two can never publish an
//! upload.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{
    ByteStream, ObjectInfo, ObjectKey, PutOptions, Store, StoreError, Visibility, write_limited,
};

#[derive(Debug, Clone)]
pub struct FsStore {
    objects: PathBuf,
    meta: PathBuf,
    tmp: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    content_type: Option<String>,
    cache_control: Option<String>,
    #[serde(default)]
    visibility: Visibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl FsStore {
    pub async fn open(data_dir: &Path) -> Result<FsStore, StoreError> {
        Self::with_layout(
            &data_dir.join("objects"),
            &data_dir.join("objects.meta"),
            &data_dir.join("tmp").join("store"),
        )
        .await
    }

    /// A store with objects in `objects`, metadata in `meta` and temp files in
    /// `tmp` (which must be on the same filesystem as `objects`). Used by
    /// `media-node process` to write outputs straight into a folder.
    pub async fn with_layout(
        objects: &Path,
        meta: &Path,
        tmp: &Path,
    ) -> Result<FsStore, StoreError> {
        let store = FsStore {
            objects: objects.to_path_buf(),
            meta: meta.to_path_buf(),
            tmp: tmp.to_path_buf(),
        };
        for dir in [&store.objects, &store.meta, &store.tmp] {
            tokio::fs::create_dir_all(dir).await?;
        }
        Ok(store)
    }

    fn data_path(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.objects.clone();
        path.extend(key.segments());
        path
    }

    fn meta_path(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.meta.clone();
        path.extend(key.segments());
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".json");
        path.set_file_name(name);
        path
    }

    /// A new temp file below `tmp/store`, removed on drop unless persisted.
    async fn temp_file(&self) -> Result<(tokio::fs::File, tempfile::TempPath), StoreError> {
        let dir = self.tmp.clone();
        let (file, path) = tokio::task::spawn_blocking(move || {
            tempfile::Builder::new()
                .prefix(".put-")
                .tempfile_in(dir)
                .map(|t| t.into_parts())
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        Ok((tokio::fs::File::from_std(file), path))
    }

    /// Writes the metadata, then moves the synced temp file into place.
    async fn commit(
        &self,
        key: &ObjectKey,
        temp: tempfile::TempPath,
        opts: &PutOptions,
    ) -> Result<(), StoreError> {
        let meta = Meta {
            content_type: opts.content_type.clone(),
            cache_control: opts.cache_control.clone(),
            visibility: opts.visibility,
            owner: opts.owner.clone(),
        };
        let meta_path = self.meta_path(key);
        let meta_json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        write_atomic(&self.tmp, &meta_path, &meta_json)
            .await
            .map_err(conflict_as(key))?;

        let dest = self.data_path(key);
        let placed = async {
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::task::spawn_blocking(move || temp.persist(&dest).map_err(|e| e.error))
                .await
                .map_err(std::io::Error::other)?
        };
        if let Err(e) = placed.await {
            // No object was at `key` (a conflict means a folder is there, or a
            // file is where a folder should be): the metadata just written
            // belongs to nothing.
            let _ = tokio::fs::remove_file(&meta_path).await;
            return Err(conflict_as(key)(StoreError::Io(e)));
        }
        Ok(())
    }
}

async fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let tmp_dir = tmp_dir.to_path_buf();
    let dest = dest.to_path_buf();
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = tempfile::Builder::new()
            .prefix(".meta-")
            .tempfile_in(tmp_dir)?;
        file.write_all(&data)?;
        file.as_file().sync_data()?;
        file.persist(dest).map_err(|e| e.error)?;
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// A path component that is a file (`a` when asked for `a/b`) or a folder
/// where the object's file would be (`a` when `a/b` exists) means there is no
/// such object.
fn not_found_as(key: &ObjectKey) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            StoreError::NotFound(key.to_string())
        }
        _ => StoreError::Io(e),
    }
}

/// The same collisions while writing: `key` cannot be placed beside an
/// existing key.
fn conflict_as(key: &ObjectKey) -> impl Fn(StoreError) -> StoreError + '_ {
    move |e| match e {
        StoreError::Io(io)
            if matches!(
                io.kind(),
                ErrorKind::AlreadyExists | ErrorKind::NotADirectory | ErrorKind::IsADirectory
            ) =>
        {
            StoreError::Conflict(key.to_string())
        }
        other => other,
    }
}

/// The size of the object's file, or `NotFound` when there is none.
async fn file_size(key: &ObjectKey, path: &Path) -> Result<u64, StoreError> {
    let md = tokio::fs::metadata(path).await.map_err(not_found_as(key))?;
    if !md.is_file() {
        return Err(StoreError::NotFound(key.to_string()));
    }
    Ok(md.len())
}

#[async_trait]
impl Store for FsStore {
    fn kind(&self) -> &'static str {
        "fs"
    }

    async fn put_file(
        &self,
        key: &ObjectKey,
        src: &Path,
        opts: &PutOptions,
    ) -> Result<u64, StoreError> {
        let (mut file, temp) = self.temp_file().await?;
        let mut source = tokio::fs::File::open(src).await?;
        let bytes = tokio::io::copy(&mut source, &mut file).await?;
        file.sync_data().await?;
        drop(file);
        self.commit(key, temp, opts).await?;
        Ok(bytes)
    }

    async fn put_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        opts: &PutOptions,
    ) -> Result<(), StoreError> {
        let (mut file, temp) = self.temp_file().await?;
        file.write_all(&data).await?;
        file.sync_data().await?;
        drop(file);
        self.commit(key, temp, opts).await
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        max_bytes: u64,
        opts: &PutOptions,
    ) -> Result<u64, StoreError> {
        let (file, temp) = self.temp_file().await?;
        let written = write_limited(key, body, file, max_bytes, true).await?;
        self.commit(key, temp, opts).await?;
        Ok(written)
    }

    async fn get_to_file(
        &self,
        key: &ObjectKey,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, StoreError> {
        let src = self.data_path(key);
        let size = file_size(key, &src).await?;
        if size > max_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                limit: max_bytes,
            });
        }
        Ok(tokio::fs::copy(&src, dest)
            .await
            .map_err(not_found_as(key))?)
    }

    async fn get_bytes(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StoreError> {
        let src = self.data_path(key);
        let size = file_size(key, &src).await?;
        if size > max_bytes {
            return Err(StoreError::TooLarge {
                key: key.to_string(),
                limit: max_bytes,
            });
        }
        Ok(tokio::fs::read(&src)
            .await
            .map_err(not_found_as(key))?
            .into())
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StoreError> {
        let md = match tokio::fs::metadata(self.data_path(key)).await {
            Ok(md) if md.is_file() => md,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            // A path component that is a file ("a" when asked for "a/b").
            Err(e) if e.kind() == ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = match tokio::fs::read(self.meta_path(key)).await {
            Ok(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
            Err(_) => Meta::default(),
        };
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: md.len(),
            content_type: meta.content_type,
            cache_control: meta.cache_control,
            visibility: meta.visibility,
            owner: meta.owner,
        }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        for path in [self.data_path(key), self.meta_path(key)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Walk only the deepest directory the prefix fully names.
        let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let mut start = self.objects.clone();
        if !dir_part.is_empty() {
            let dir_key = ObjectKey::parse(dir_part)?;
            start.extend(dir_key.segments());
        }
        let root = self.objects.clone();
        let prefix_owned = prefix.to_string();
        let keys = tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            walk(&root, &start, &prefix_owned, &mut keys)?;
            keys.sort();
            Ok::<_, std::io::Error>(keys)
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let key = ObjectKey::parse(key)?;
            if let Some(info) = self.head(&key).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let (mut file, temp) = self.temp_file().await?;
        file.write_all(b"ok").await?;
        drop(file);
        drop(temp);
        tokio::fs::metadata(&self.objects).await?;
        Ok(())
    }

    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        Some(self.data_path(key))
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(root, &path, prefix, out)?;
        } else if file_type.is_file() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            let key = rel.replace(std::path::MAIN_SEPARATOR, "/");
            if key.starts_with(prefix) {
                out.push(key);
            }
        }
    }
    Ok(())
}
