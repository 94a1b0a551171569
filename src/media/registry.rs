//! GStreamer's plugin registry: one cache per node, read-only in media
//! children.
//!
//! GStreamer keeps what it knows of its plugins in a registry file and, at
//! init, re-checks every plugin file and forks `gst-plugin-scanner` for those
//! that changed. A media child must do neither: it starts once per job, it may
//! not run programs, and it may not write outside its work dir. So the node
//! keeps the registry in its data dir, brings it up to date once when it starts
//! (its own `gst::init`), and its children read it as it is (`GST_REGISTRY`,
//! `GST_REGISTRY_UPDATE=no`, `GST_REGISTRY_FORK=no`).

use std::path::{Path, PathBuf};

/// The registry file of a node whose data dir is `data_dir`.
pub fn node_cache(data_dir: &Path) -> PathBuf {
    data_dir.join(format!("gstreamer-registry.{}.bin", std::env::consts::ARCH))
}

/// Makes `{data_dir}`'s registry the one this process uses, unless
/// `GST_REGISTRY` names another. A new data dir starts from a copy of the
/// user's registry when there is one (GStreamer then only re-checks it; a scan
/// from nothing takes seconds).
///
/// Call it before GStreamer is initialised and before the process starts a
/// thread: it sets an environment variable.
pub fn use_node_cache(data_dir: &Path) {
    if std::env::var_os("GST_REGISTRY").is_some() {
        return;
    }
    let cache = node_cache(data_dir);
    if !cache.exists() {
        let user = user_registry();
        if user.is_file() && std::fs::create_dir_all(data_dir).is_ok() {
            let _ = std::fs::copy(&user, &cache);
        }
    }
    // SAFETY: called from `main` before any other thread exists.
    unsafe {
        std::env::set_var("GST_REGISTRY", &cache);
    }
}

/// The registry this process uses: `GST_REGISTRY`, or GStreamer's default in
/// the user's cache dir.
pub fn path() -> PathBuf {
    std::env::var_os("GST_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(user_registry)
}

/// GStreamer's default: `$XDG_CACHE_HOME/gstreamer-1.0/registry.ARCH.bin`.
fn user_registry() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache
        .join("gstreamer-1.0")
        .join(format!("registry.{}.bin", std::env::consts::ARCH))
}

/// The environment of a media child: read the node's registry, never scan.
pub fn child_env() -> [(&'static str, std::ffi::OsString); 3] {
    [
        ("GST_REGISTRY", path().into_os_string()),
        ("GST_REGISTRY_UPDATE", "no".into()),
        ("GST_REGISTRY_FORK", "no".into()),
    ]
}
