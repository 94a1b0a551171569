//! Test support: a media process trying to get out of its sandbox. Each try
//! is reported as `allowed` or `denied: <error>`; the isolation tests assert
//! that every one is denied.

use std::path::Path;

use serde_json::{Map, Value};

use crate::jobs::spec::EscapeSpec;

/// Tries everything in `spec`, and a few things every media process must be
/// kept from: writing into its input (a hard link to the stored upload),
/// reading the node's environment, signalling the node.
pub fn attempt(spec: &EscapeSpec, input: &Path) -> Map<String, Value> {
    let parent = std::os::unix::process::parent_id();
    let tries: Vec<(&str, std::io::Result<()>)> = vec![
        ("read", std::fs::read(&spec.read).map(drop)),
        ("write", std::fs::write(&spec.write, b"escaped")),
        (
            "connect",
            std::net::TcpStream::connect(spec.connect.as_str()).map(drop),
        ),
        (
            "exec",
            std::process::Command::new(&spec.exec).status().map(drop),
        ),
        (
            "write_input",
            std::fs::OpenOptions::new()
                .append(true)
                .open(input)
                .map(drop),
        ),
        (
            "read_node_environ",
            std::fs::read(format!("/proc/{parent}/environ")).map(drop),
        ),
        ("signal_node", signal(parent)),
    ];
    tries
        .into_iter()
        .map(|(name, outcome)| {
            let said = match outcome {
                Ok(()) => "allowed".to_string(),
                Err(e) => format!("denied: {e}"),
            };
            (name.to_string(), Value::String(said))
        })
        .collect()
}

/// Signal 0 to `pid`: only the permission check, nothing is delivered.
fn signal(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("no parent"))?;
    rustix::process::test_kill_process(pid).map_err(Into::into)
}
