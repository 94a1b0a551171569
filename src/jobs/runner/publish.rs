//! The last step of a job, in the node: its outputs go to the store.

use futures_util::{StreamExt, TryStreamExt};

use super::{JobContext, RunError};
use crate::jobs::error::ErrorCode;
use crate::output::{FileKind, ProducedFile};
use crate::store::{ObjectKey, PutOptions, Visibility, content_type_for};

/// Uploads of one job's outputs in flight at once.
const UPLOAD_CONCURRENCY: usize = 8;
/// Published media never changes under its key (a re-run writes the same bytes).
const MEDIA_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// VOD playlists may be rewritten by a re-run; keep them short-lived in caches.
const PLAYLIST_CACHE_CONTROL: &str = "public, max-age=60";

/// Uploads files in order (media, then media playlists, then the master), media in
/// parallel. On failure or cancel, what was uploaded is removed again, so no
/// partial output stays visible.
pub async fn publish(
    files: &[ProducedFile],
    prefix: &str,
    ctx: &JobContext,
) -> Result<(), RunError> {
    let keyed: Vec<(ObjectKey, &ProducedFile)> = files
        .iter()
        .map(|f| {
            let key = if prefix.is_empty() {
                ObjectKey::parse(f.rel_key.clone())
            } else {
                ObjectKey::parse(format!("{prefix}/{}", f.rel_key))
            };
            key.map(|k| (k, f))
                .map_err(|e| RunError::permanent(ErrorCode::InvalidKey, e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let state = PublishState {
        total: keyed.len().max(1),
        done: std::sync::atomic::AtomicUsize::new(0),
        uploaded: std::sync::Mutex::new(Vec::new()),
    };
    let (media, mut playlists): (Vec<_>, Vec<_>) =
        keyed.iter().partition(|(_, f)| f.kind == FileKind::Media);
    // Master playlists last (a stable sort keeps the rest in order), so a reader
    // never finds a master before everything the job publishes.
    playlists.sort_by_key(|(key, _)| key.as_str().ends_with("master.m3u8"));
    // Collected first: a stream holding the closure would not be `Send`.
    let uploads: Vec<_> = media
        .into_iter()
        .map(|(key, file)| upload_one(ctx, &state, key.clone(), file))
        .collect();
    let mut outcome = futures_util::stream::iter(uploads)
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ());
    if outcome.is_ok() {
        // Playlists one by one, in order: the master comes last.
        for (key, file) in playlists {
            if let Err(e) = upload_one(ctx, &state, key.clone(), file).await {
                outcome = Err(e);
                break;
            }
        }
    }
    if let Err(err) = outcome {
        let written =
            std::mem::take(&mut *state.uploaded.lock().unwrap_or_else(|p| p.into_inner()));
        for key in written.iter().rev() {
            if let Err(e) = ctx.store.delete(key).await {
                tracing::warn!(key = %key, error = %e, "cannot remove a partial output");
            }
        }
        return Err(err);
    }
    Ok(())
}

struct PublishState {
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    uploaded: std::sync::Mutex<Vec<ObjectKey>>,
}

async fn upload_one(
    ctx: &JobContext,
    state: &PublishState,
    key: ObjectKey,
    file: &ProducedFile,
) -> Result<(), RunError> {
    if ctx.cancel.is_cancelled() {
        return Err(RunError::Canceled);
    }
    let opts = PutOptions {
        content_type: Some(content_type_for(key.as_str()).to_string()),
        cache_control: Some(
            match file.kind {
                FileKind::Media => MEDIA_CACHE_CONTROL,
                FileKind::Playlist => PLAYLIST_CACHE_CONTROL,
            }
            .to_string(),
        ),
        visibility: Visibility::Public,
        owner: None,
    };
    ctx.store.put_file(&key, &file.path, &opts).await?;
    state
        .uploaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(key);
    let n = state
        .done
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    ctx.progress.report(90 + (n * 9 / state.total) as u8);
    Ok(())
}
