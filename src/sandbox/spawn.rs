//! Starting a confined child: the node's own binary with a clean environment,
//! its own process group, `no_new_privs`, and SIGKILL when the node dies.
//!
//! Both kinds of media process start here: a job's (`media-node work`) and a
//! live stream's (`media-node work-live`). The child then confines itself
//! further ([`super::enter`]) before it reads a byte of media.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;

use crate::media::registry;

/// Environment variables a child keeps: what GStreamer, glib and the C
/// libraries need to find their files, and logging. Nothing else of the node's
/// environment (tokens, secrets, credentials) reaches it.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "XDG_DATA_DIRS",
    "RUST_LOG",
    "RUST_BACKTRACE",
];
/// Prefixes of kept variables (GStreamer's own, ORC's).
const KEPT_ENV_PREFIXES: &[&str] = &["GST_", "ORC_"];

/// Whether the child keeps the node's variable `name`.
fn kept(name: &OsStr) -> bool {
    name.to_str().is_some_and(|k| {
        KEPT_ENV.contains(&k) || KEPT_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
    })
}

/// `media-node ARGS…` in `dir` (also its `TMPDIR`), with the kept environment
/// and the GStreamer registry cache; stdin null, stdout piped, stderr the
/// node's. Killed when dropped.
pub fn command<I, S>(args: I, dir: &Path) -> std::io::Result<tokio::process::Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| kept(k)))
        .envs(registry::child_env())
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls (two prctls).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            rustix::thread::set_no_new_privs(true)?;
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    Ok(cmd)
}

/// Sends `sig` to process `pid` (nothing when it is gone).
pub fn signal(pid: Option<u32>, sig: rustix::process::Signal) {
    if let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The name of signal `sig` (`SIGSEGV`), or its number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_have_names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(64), "signal 64");
    }

    #[test]
    fn secrets_are_not_kept() {
        for secret in [
            "MEDIA_NODE_API_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "MEDIA_NODE_WEBHOOK_SECRET",
        ] {
            assert!(!kept(OsStr::new(secret)), "{secret}");
        }
        for needed in ["PATH", "GST_DEBUG", "ORC_CODE", "RUST_LOG"] {
            assert!(kept(OsStr::new(needed)), "{needed}");
        }
    }
}
