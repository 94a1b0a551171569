//! A throwaway PostgreSQL cluster per test: Debian's server binaries
//! (`initdb`, `pg_ctl`), a temp data dir, a free port from the OS, trust
//! authentication on 127.0.0.1 only. As root, initdb refuses to run, so the
//! cluster belongs to the `postgres` user (`runuser`), as Debian's own
//! `pg_virtualenv` does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port};

pub struct Postgres {
    bin: PathBuf,
    root: tempfile::TempDir,
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/N/bin` (or `TEST_POSTGRES_BIN`).
fn server_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("TEST_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server (Debian package postgresql; scripts/test installs it)")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql")
        .1
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs `cmd` to its end; panics with its stderr when it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd.stdout(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program args…`, as `postgres` when this process is root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub async fn start() -> Postgres {
        let bin = server_bin();
        let root = tempfile::tempdir().unwrap();
        if is_root() {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(root.path()),
                "chown the cluster's dir to postgres",
            );
        }
        let data = root.path().join("data");
        run(
            as_owner(&bin.join("initdb")).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        );
        let server = Postgres {
            bin,
            root,
            port: free_port(),
        };
        server.resume().await;
        server
    }

    /// Starts the server (again, after [`Postgres::stop`]) on its port.
    pub async fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.path().display()
        );
        run(
            as_owner(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.root.path().join("data"))
                .args(["-o", &options, "-l"])
                .arg(self.root.path().join("server.log"))
                .args(["-w", "start"]),
            "pg_ctl start",
        );
        let port = self.port;
        eventually(
            Duration::from_secs(30),
            "postgres to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Stops the server now (its clients' connections break), keeping its data.
    pub fn stop(&self) {
        run(
            as_owner(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.root.path().join("data"))
                .args(["-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    /// A new, empty database on the cluster; its URL.
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let create = format!("CREATE DATABASE \"{name}\"");
        run(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .args(["-v", "ON_ERROR_STOP=1", "-c", &create]),
            &format!("create database {name}"),
        );
        self.url(name)
    }

    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's log, for a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.root.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
