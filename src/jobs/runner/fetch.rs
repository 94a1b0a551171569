//! The first step of a job, in the node: what the media step reads becomes files
//! of the job's work dir (the only folder the media child may read): the input,
//! and the tags' product photos, still encoded (they are decoded in the child).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{JobContext, RunError};
use crate::jobs::error::ErrorCode;
use crate::jobs::spec::JobSpec;
use crate::store::{ObjectKey, StoreError};

/// Name of the input inside the work dir.
const INPUT_FILE: &str = "input";

/// The files a job's media step reads, all inside its work dir.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub input: PathBuf,
    /// Product photos by store key.
    pub tag_images: BTreeMap<String, PathBuf>,
}

/// Fetches the input and the tags' product photos into `ctx.work_dir`.
pub async fn fetch(spec: &JobSpec, ctx: &JobContext) -> Result<Fetched, RunError> {
    let input = fetch_input(&spec.input.key, ctx).await?;
    let tag_images = fetch_tag_images(spec, ctx).await?;
    Ok(Fetched { input, tag_images })
}

/// The input as `work_dir/input`: a hard link to the object when the store
/// keeps it on the same local disk (no copy), else a copy or a download.
async fn fetch_input(key: &ObjectKey, ctx: &JobContext) -> Result<PathBuf, RunError> {
    let max = ctx.limits.max_input_bytes;
    let dest = ctx.work_dir.join(INPUT_FILE);
    let local = match &ctx.input_override {
        Some(path) => Some(path.clone()),
        None => ctx.store.local_path(key),
    };
    let too_large = || {
        RunError::permanent(
            ErrorCode::InputTooLarge,
            format!("input `{key}` is larger than the limit of {max} bytes"),
        )
    };
    let not_found = || match &ctx.input_override {
        Some(path) => RunError::permanent(
            ErrorCode::InputNotFound,
            format!("no file at {}", path.display()),
        ),
        None => RunError::permanent(ErrorCode::InputNotFound, format!("no object at `{key}`")),
    };
    if let Some(path) = local {
        return match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() && md.len() > max => Err(too_large()),
            Ok(md) if md.is_file() => {
                link_or_copy(&path, &dest).await?;
                Ok(dest)
            }
            _ => Err(not_found()),
        };
    }
    match ctx.store.get_to_file(key, &dest, max).await {
        Ok(_) => Ok(dest),
        Err(StoreError::NotFound(_)) => Err(not_found()),
        Err(StoreError::TooLarge { .. }) => Err(too_large()),
        Err(other) => Err(other.into()),
    }
}

/// A hard link (same filesystem: instant, no space), else a copy.
async fn link_or_copy(from: &Path, to: &Path) -> Result<(), RunError> {
    if tokio::fs::hard_link(from, to).await.is_ok() {
        return Ok(());
    }
    tokio::fs::copy(from, to).await.map(|_| ()).map_err(|e| {
        RunError::transient(ErrorCode::WorkDirError, format!("copying the input: {e}"))
    })
}

/// Each distinct product photo as `work_dir/tag-image-N`, by store key.
async fn fetch_tag_images(
    spec: &JobSpec,
    ctx: &JobContext,
) -> Result<BTreeMap<String, PathBuf>, RunError> {
    let mut images = BTreeMap::new();
    for key in spec.tags.iter().filter_map(|t| t.image.as_ref()) {
        if images.contains_key(key.as_str()) {
            continue;
        }
        let path = ctx.work_dir.join(format!("tag-image-{}", images.len()));
        match ctx
            .store
            .get_to_file(key, &path, ctx.limits.max_image_bytes)
            .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                return Err(RunError::permanent(
                    ErrorCode::TagImageNotFound,
                    format!("no product photo at `{key}`"),
                ));
            }
            Err(StoreError::TooLarge { .. }) => {
                return Err(RunError::permanent(
                    ErrorCode::TagImageInvalid,
                    format!(
                        "product photo `{key}` is larger than {} bytes",
                        ctx.limits.max_image_bytes
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        images.insert(key.as_str().to_string(), path);
    }
    Ok(images)
}
