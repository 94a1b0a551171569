//! Files a job produced in its work dir and publishes under its output prefix.

use std::path::PathBuf;

/// How a published file should be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// MP4s, segments and stills: never change under their key.
    Media,
    /// Playlists and text tracks: small, read often; a re-run job may rewrite them.
    Playlist,
}

/// A file to publish.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProducedFile {
    /// Key below the output prefix.
    pub rel_key: String,
    pub path: PathBuf,
    pub kind: FileKind,
}

/// `prefix/rel`, or `rel` without a prefix.
pub fn join_key(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}
