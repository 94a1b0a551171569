//! Confinement of a process that parses untrusted media.
//!
//! GStreamer's demuxers and decoders are C code. The node runs them in child
//! processes ([`crate::jobs::runner::child`]), and each child confines
//! *itself* with [`enter`] right after it starts, while it has one thread and
//! before it reads a byte of input, in this order:
//! 1. [`limits`]: rlimits on address space, CPU seconds, file size and open
//!    files, and no core dumps;
//! 2. [`fs`] (Landlock, where the kernel has it): read-only system files,
//!    read-write only its own folder, no TCP, no signals out of the sandbox;
//! 3. [`filter`] (seccomp): an allow-list of system calls; no sockets but
//!    socket pairs, no exec or fork, no ptrace, no mount.
//!
//! The node has already set `no_new_privs` and a parent-death signal when it
//! started the child, and cleared its environment. The parent decides the
//! [`Policy`]; the child cannot widen it.

pub mod filter;
pub mod fs;
pub mod limits;
pub mod spawn;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use limits::Limits;

/// What a confined process may touch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Policy {
    /// Read-only: files and folders (with everything below them).
    pub read: Vec<PathBuf>,
    /// Read-write: folders (with everything below them).
    pub write: Vec<PathBuf>,
    pub limits: Limits,
}

impl Policy {
    /// A policy reading `read` and the system files ([`system_read_paths`]),
    /// writing only below `write`.
    pub fn new(read: Vec<PathBuf>, write: Vec<PathBuf>, limits: Limits) -> Policy {
        let mut all = system_read_paths();
        all.extend(read);
        Policy {
            read: all,
            write,
            limits,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot set the {resource} limit: {source}")]
    Limit {
        resource: &'static str,
        source: std::io::Error,
    },
    #[error("cannot restrict file access (Landlock): {0}")]
    Landlock(String),
    #[error("cannot install the system call filter (seccomp): {0}")]
    Seccomp(String),
}

/// How far the confinement went: Landlock depends on the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Fully,
    Partially,
    /// The kernel has no Landlock: only rlimits and seccomp hold.
    NoLandlock,
}

/// Confines the calling process (every thread it starts later inherits it).
/// Call it while the process has a single thread.
pub fn enter(policy: &Policy) -> Result<Enforced, SandboxError> {
    limits::apply(&policy.limits)?;
    let enforced = fs::restrict(&policy.read, &policy.write)?;
    filter::apply()?;
    Ok(enforced)
}

/// Files every confined process reads: shared libraries and GStreamer's
/// plugins, the dynamic loader's cache, fonts and their configuration, time
/// zones, the CPU list, a few devices, and its own `/proc` entry (never the
/// node's: `/proc/<node>/environ` holds its secrets).
pub fn system_read_paths() -> Vec<PathBuf> {
    [
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/etc/ld.so.cache",
        "/etc/fonts",
        "/etc/localtime",
        "/var/cache/fontconfig",
        "/sys/devices/system/cpu",
        "/dev/null",
        "/dev/zero",
        "/dev/urandom",
        "/dev/random",
        "/proc/self",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}
