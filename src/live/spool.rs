//! The spool: closed segments on local disk until the object store has them.
//!
//! Layout: `{data_dir}/live/spool/{stream_id}/{sequence:012}.ts`, and
//! `{stream_id}/{rendition}/{sequence:012}.ts` for the renditions of a stream
//! whose profile transcodes (see [`Track`]). A segment is
//! written to a `.part` file, flushed to disk and renamed, so after a crash or a
//! restart every `.ts` in the spool is whole; the registry's segment rows say
//! what each one is. A stream's folder goes away once its replay is written.
//!
//! The spool has a byte budget (`live.spool_max_bytes`). When a segment would
//! pass it, the segment is **not** spooled and is counted as dropped: what is
//! already spooled is never given up, the stream goes on, and the next segment
//! that fits starts after a discontinuity so playlists stay truthful.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use uuid::Uuid;

use super::Track;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({used} of {limit} bytes used)")]
    Full { used: u64, limit: u64 },
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Spool {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
}

impl Spool {
    /// Opens the spool below `dir`, counting what a previous run left in it and
    /// removing half-written `.part` files.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut used = 0;
        for stream in std::fs::read_dir(dir)? {
            let stream = stream?;
            if stream.file_type()?.is_dir() {
                used += count_segments(&stream.path(), 1)?;
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            limit,
            used: AtomicU64::new(used),
        })
    }

    pub fn stream_dir(&self, stream: Uuid) -> PathBuf {
        self.dir.join(stream.to_string())
    }

    fn track_dir(&self, track: &Track) -> PathBuf {
        let dir = self.stream_dir(track.stream);
        if track.rendition.is_empty() {
            dir
        } else {
            dir.join(&track.rendition)
        }
    }

    pub fn path(&self, track: &Track, sequence: u64) -> PathBuf {
        self.track_dir(track).join(format!("{sequence:012}.ts"))
    }

    /// Bytes held for all streams.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Streams that have a folder in the spool (left by an earlier run, or live).
    pub fn streams(&self) -> std::io::Result<Vec<Uuid>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::parse_str(n).ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Writes a segment durably. Refused, without writing, if it would pass the
    /// budget.
    pub async fn write(&self, track: &Track, sequence: u64, data: Bytes) -> Result<(), SpoolError> {
        let size = data.len() as u64;
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + size <= self.limit).then_some(used + size)
            });
        if let Err(used) = reserved {
            return Err(SpoolError::Full {
                used,
                limit: self.limit,
            });
        }
        let path = self.path(track, sequence);
        let result = tokio::task::spawn_blocking(move || write_durably(&path, &data))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = result {
            self.used.fetch_sub(size, Ordering::AcqRel);
            return Err(SpoolError::Io(e));
        }
        Ok(())
    }

    /// Forgets a stored segment.
    pub async fn remove(&self, track: &Track, sequence: u64) {
        let path = self.path(track, sequence);
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && tokio::fs::remove_file(&path).await.is_ok()
        {
            self.used.fetch_sub(meta.len(), Ordering::AcqRel);
        }
    }

    /// Whether a segment is spooled.
    pub async fn has(&self, track: &Track, sequence: u64) -> bool {
        tokio::fs::try_exists(self.path(track, sequence))
            .await
            .unwrap_or(false)
    }

    /// Drops every spooled segment of a stream (another node relays it now);
    /// returns how many.
    pub async fn discard_stream(&self, stream: Uuid) -> u64 {
        let mut dropped = 0;
        let mut dirs = vec![self.stream_dir(stream)];
        while let Some(dir) = dirs.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let path = entry.path();
                match entry.file_type().await {
                    Ok(kind) if kind.is_dir() => dirs.push(path),
                    Ok(_) => {
                        if let Ok(meta) = tokio::fs::metadata(&path).await
                            && tokio::fs::remove_file(&path).await.is_ok()
                        {
                            self.used.fetch_sub(meta.len(), Ordering::AcqRel);
                            dropped += 1;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        self.close_stream(stream).await;
        dropped
    }

    /// Removes a stream's folder and its renditions' folders, where empty.
    pub async fn close_stream(&self, stream: Uuid) {
        let dir = self.stream_dir(stream);
        if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let _ = tokio::fs::remove_dir(entry.path()).await;
            }
        }
        let _ = tokio::fs::remove_dir(&dir).await;
    }

    /// Removes a track's (empty) folder once it is done, and the stream's once
    /// all its tracks are.
    pub async fn close_track(&self, track: &Track) {
        let _ = tokio::fs::remove_dir(self.track_dir(track)).await;
        let _ = tokio::fs::remove_dir(self.stream_dir(track.stream)).await;
    }
}

/// Bytes of the segments below `dir` (renditions one level down), removing
/// half-written `.part` files.
fn count_segments(dir: &Path, depth: u32) -> std::io::Result<u64> {
    let mut used = 0;
    for file in std::fs::read_dir(dir)? {
        let file = file?;
        let path = file.path();
        if file.file_type()?.is_dir() {
            if depth > 0 {
                used += count_segments(&path, depth - 1)?;
            }
        } else if path.extension().is_some_and(|e| e == "part") {
            let _ = std::fs::remove_file(&path);
        } else {
            used += file.metadata()?.len();
        }
    }
    Ok(used)
}

fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let part = path.with_extension("ts.part");
    let mut file = std::fs::File::create(&part)?;
    file.write_all(data)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&part, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn segments_are_counted_refused_over_budget_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 10).unwrap();
        let id = Uuid::now_v7();
        let track = Track::relayed(id);
        let rung = Track::rendition(id, "240p");
        spool
            .write(&track, 0, Bytes::from_static(b"123456"))
            .await
            .unwrap();
        let err = spool.write(&track, 1, Bytes::from_static(b"123456")).await;
        assert!(matches!(err, Err(SpoolError::Full { used: 6, limit: 10 })));
        assert!(!spool.has(&track, 1).await);
        spool
            .write(&rung, 1, Bytes::from_static(b"1234"))
            .await
            .unwrap();
        assert_eq!(spool.used(), 10);
        std::fs::write(spool.stream_dir(id).join("000000000002.ts.part"), b"xx").unwrap();

        let again = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(again.used(), 10);
        assert_eq!(again.streams().unwrap(), [id]);
        assert!(!spool.stream_dir(id).join("000000000002.ts.part").exists());
        again.remove(&track, 0).await;
        again.remove(&track, 0).await;
        assert_eq!(again.used(), 4);
        assert!(again.has(&rung, 1).await);
        assert!(!again.has(&track, 1).await);
        again.close_track(&track).await;
        assert_eq!(
            again.streams().unwrap(),
            [id],
            "a rendition still holds a segment"
        );
        again.remove(&rung, 1).await;
        again.close_track(&rung).await;
        assert!(again.streams().unwrap().is_empty());
    }
}
