//! Resource limits of a confined process, and telling a memory-limit hit
//! from a crash.
//!
//! Memory is limited by `RLIMIT_AS`, the address space: it counts what the
//! process maps (code, heap, thread stacks, reserved malloc arenas), not
//! only what it touches, so the limit is sized from measured peaks (README,
//! "Trust and limits"). A process at its limit fails in whichever code asked
//! for memory: a decoder returns an error, GLib or Rust aborts, C code may
//! fault on a null pointer. Whatever the way, when its peak address space
//! reached the limit (within [`headroom`]) the run failed for memory, which
//! [`memory_limit_hit`] tells, also from a fatal-signal handler
//! ([`on_fatal_signal_write`]).

use std::ffi::CString;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{Resource, Rlimit};
use serde::{Deserialize, Serialize};

use super::SandboxError;

/// Limits of one confined process; `None` leaves a resource as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Address space, bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time of all its threads, seconds (SIGXCPU at the limit).
    pub cpu_seconds: Option<u64>,
    /// Largest file it may write, bytes (writes beyond fail with `EFBIG`).
    pub file_bytes: Option<u64>,
    /// Open files.
    pub open_files: Option<u64>,
}

/// The memory limit in force (0: none).
static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(0);

pub fn apply(limits: &Limits) -> Result<(), SandboxError> {
    set(Resource::Core, Some(0), "core dump")?;
    // At the soft limit the kernel sends SIGXCPU (`job_timeout`); at the hard
    // one SIGKILL, which would read as a crash: the hard one comes later.
    set_soft(Resource::Cpu, limits.cpu_seconds, 5, "CPU time")?;
    set(Resource::Fsize, limits.file_bytes, "file size")?;
    set(Resource::Nofile, limits.open_files, "open files")?;
    if limits.file_bytes.is_some() {
        // A write past the limit fails (EFBIG) and the job fails with it,
        // rather than the process dying of SIGXFSZ.
        // SAFETY: setting a disposition; no handler runs.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    }
    set(Resource::As, limits.memory_bytes, "memory")?;
    if let Some(bytes) = limits.memory_bytes {
        MEMORY_LIMIT.store(bytes, Ordering::Relaxed);
    }
    Ok(())
}

/// Sets both the soft and the hard limit, so the process cannot raise it.
fn set(resource: Resource, value: Option<u64>, name: &'static str) -> Result<(), SandboxError> {
    set_soft(resource, value, 0, name)
}

/// Sets the soft limit to `value` and the hard one `slack` above it.
fn set_soft(
    resource: Resource,
    value: Option<u64>,
    slack: u64,
    name: &'static str,
) -> Result<(), SandboxError> {
    let Some(value) = value else { return Ok(()) };
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: Some(value),
            maximum: Some(value.saturating_add(slack)),
        },
    )
    .map_err(|e| SandboxError::Limit {
        resource: name,
        source: e.into(),
    })
}

/// How close to the limit a peak must be to count as a hit: the largest
/// single requests (a thread stack, a malloc arena, a 4K frame) are around
/// 64 MiB; never more than a quarter of a small limit.
pub fn headroom(limit: u64) -> u64 {
    (limit / 8).max(64 << 20).min(limit / 4)
}

/// Whether this process's peak address space reached its memory limit.
pub fn memory_limit_hit() -> bool {
    let limit = MEMORY_LIMIT.load(Ordering::Relaxed);
    limit > 0 && vm_peak_bytes().is_some_and(|peak| peak + headroom(limit) >= limit)
}

/// The memory limit in force, bytes.
pub fn memory_limit() -> Option<u64> {
    Some(MEMORY_LIMIT.load(Ordering::Relaxed)).filter(|&l| l > 0)
}

/// `VmPeak` of `/proc/self/status`, read with plain system calls into a stack
/// buffer: safe to call from a signal handler.
fn vm_peak_bytes() -> Option<u64> {
    let mut buf = [0u8; 4096];
    // SAFETY: open/read/close on a NUL-terminated path into a local buffer.
    let len = unsafe {
        let fd = libc::open(
            c"/proc/self/status".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        usize::try_from(n).ok()?
    };
    parse_kib(&buf[..len], b"VmPeak:").map(|kib| kib * 1024)
}

/// The number of kibibytes on the line starting with `key`, without
/// allocating.
fn parse_kib(status: &[u8], key: &[u8]) -> Option<u64> {
    let start = status
        .windows(key.len())
        .position(|w| w == key)
        .map(|at| at + key.len())?;
    let mut value: u64 = 0;
    let mut seen = false;
    for &b in &status[start..] {
        match b {
            b' ' | b'\t' if !seen => {}
            b'0'..=b'9' => {
                seen = true;
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            _ => break,
        }
    }
    seen.then_some(value)
}

/// Signals that end a process that gets them (a crash).
const FATAL_SIGNALS: [libc::c_int; 6] = [
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGFPE,
];

/// Fatal signals end the process, as their default action does. Replaces
/// the handlers Rust's runtime installs for stack overflows, which return
/// from a SIGSEGV that was sent rather than caused by a fault and let the
/// process go on: a crash must be a crash, whoever reports it.
pub fn die_on_fatal_signals() {
    for sig in FATAL_SIGNALS {
        // SAFETY: restores a signal's default action.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// What the fatal-signal handler writes when the memory limit was hit.
static ON_FATAL: OnceLock<(CString, Vec<u8>)> = OnceLock::new();

/// On a fatal signal (abort, segfault, bus error, illegal instruction, trap,
/// arithmetic fault) at the memory limit, writes `bytes` to `path` before the
/// process dies of the signal; below the limit it just dies. Replaces the
/// handlers Rust's runtime installs for stack overflows.
pub fn on_fatal_signal_write(path: &std::path::Path, bytes: Vec<u8>) {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let _ = ON_FATAL.set((path, bytes));
    for sig in FATAL_SIGNALS {
        // SAFETY: a zeroed sigaction with a handler that only makes
        // async-signal-safe calls; SA_RESETHAND restores the default action.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = fatal_signal as *const () as usize;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

extern "C" fn fatal_signal(sig: libc::c_int) {
    if memory_limit_hit()
        && let Some((path, bytes)) = ON_FATAL.get()
    {
        // SAFETY: open/write/close are async-signal-safe.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o600,
            );
            if fd >= 0 {
                libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                libc::close(fd);
            }
        }
    }
    // The default action is back (SA_RESETHAND): the signal, blocked while
    // this runs, ends the process when the handler returns; a fault would
    // also recur.
    // SAFETY: raise is async-signal-safe.
    unsafe {
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_from_a_status_file() {
        let status = b"Name:\tx\nVmPeak:\t  123456 kB\nVmSize:\t 1 kB\n";
        assert_eq!(parse_kib(status, b"VmPeak:"), Some(123_456));
        assert_eq!(parse_kib(status, b"VmHWM:"), None);
        assert!(vm_peak_bytes().is_some_and(|b| b > 1 << 20));
    }

    #[test]
    fn the_headroom_is_an_eighth_or_64_mib() {
        assert_eq!(headroom(48 << 20), 12 << 20);
        assert_eq!(headroom(1 << 30), 128 << 20);
        assert_eq!(headroom(512 << 20), 64 << 20);
        assert_eq!(headroom(8 << 30), 1 << 30);
    }
}
