//! The `media-node` command line: `config`, `check`, and configuration errors.

use std::process::Command;

fn media_node() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_media-node"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MEDIA_NODE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn config_prints_the_effective_settings_with_secrets_masked() {
    let out = media_node()
        .arg("config")
        .env("MEDIA_NODE_API_TOKEN", "a-very-secret-token-1234")
        .env("MEDIA_NODE_LISTEN", "0.0.0.0:9999")
        .env("MEDIA_NODE_S3_PATH_STYLE", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:9999\""), "{text}");
    assert!(text.contains("path_style = true"), "{text}");
    assert!(!text.contains("a-very-secret-token-1234"), "{text}");
    assert!(text.contains("********"));
}

#[test]
fn a_config_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:7000\"\n[jobs]\nworkers = 5\n").unwrap();
    let out = media_node()
        .args(["--config", file.to_str().unwrap(), "config"])
        .env("MEDIA_NODE_JOBS_WORKERS", "7")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:7000\""), "{text}");
    assert!(text.contains("workers = 7"), "{text}");
}

#[test]
fn invalid_settings_are_named() {
    for (var, value) in [
        ("MEDIA_NODE_LISTEN", "not-an-address"),
        ("MEDIA_NODE_STORE", "ftp"),
        ("MEDIA_NODE_JOBS_LEASE_MS", "soon"),
        ("MEDIA_NODE_S3_PATH_STYLE", "maybe"),
    ] {
        let out = media_node().arg("config").env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(var), "{var}: {err}");
    }
    let out = media_node()
        .arg("serve")
        .env("MEDIA_NODE_STORE", "s3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("MEDIA_NODE_S3_BUCKET")
    );
}

#[test]
fn check_reports_each_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let out = media_node()
        .arg("check")
        .env("MEDIA_NODE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    for name in ["job store", "object store (fs)", "gstreamer"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(name)),
            "{text}"
        );
    }

    // An S3 store nobody listens on.
    let out = media_node()
        .arg("check")
        .env("MEDIA_NODE_DATA_DIR", dir.path())
        .env("MEDIA_NODE_STORE", "s3")
        .env("MEDIA_NODE_S3_BUCKET", "nothing")
        .env("MEDIA_NODE_S3_ENDPOINT", "http://127.0.0.1:9")
        .env("MEDIA_NODE_S3_ACCESS_KEY_ID", "x")
        .env("MEDIA_NODE_S3_SECRET_ACCESS_KEY", "y")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("object store (s3)")),
        "{text}"
    );
}
