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
        ("MEDIA_NODE_MEDIA_CORS_ORIGINS", "https://shop.example/page"),
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
        .current_dir(dir.path())
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
    // Every kind of preset, each with every file of pipelines/, though the
    // command runs outside the repository with no pipelines_dir.
    let presets = text
        .lines()
        .find(|l| l.starts_with("ok") && l.contains("presets"))
        .unwrap_or_else(|| panic!("{text}"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for kind in ["ladders", "thumbnails", "tags", "live"] {
        let mut names: Vec<String> = std::fs::read_dir(root.join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
            .collect();
        names.sort();
        let listed = format!("{kind}: {}", names.join(", "));
        assert!(presets.contains(&listed), "{listed} in {presets}");
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

/// Top-level entries (files or folders) of the repository that the build reads:
/// the manifest, build.rs and what it reads, and every file `src/` includes.
fn what_the_build_reads() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut needed: std::collections::BTreeSet<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "benches",
        "pipelines",
    ]
    .map(String::from)
    .into();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for marker in ["include_str!(\"", "include_bytes!(\""] {
                for (at, _) in text.match_indices(marker) {
                    let rest = &text[at + marker.len()..];
                    let literal = &rest[..rest.find('"').unwrap()];
                    let target = path.parent().unwrap().join(literal);
                    let target = target
                        .canonicalize()
                        .unwrap_or_else(|e| panic!("{}: {literal}: {e}", path.display()));
                    let relative = target.strip_prefix(root.canonicalize().unwrap()).unwrap();
                    let top = relative.components().next().unwrap();
                    needed.insert(top.as_os_str().to_str().unwrap().to_string());
                }
            }
        }
    }
    needed
}

/// No Docker engine runs here, so the image's build stage is checked by reading
/// it: it must copy everything the build reads.
#[test]
fn the_image_build_copies_everything_the_build_reads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).unwrap();
    let build_stage = dockerfile
        .split("\nFROM ")
        .nth(1)
        .expect("a build stage after the first FROM");
    let copied: std::collections::BTreeSet<String> = build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .flat_map(|l| {
            let words: Vec<&str> = l
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let needed = what_the_build_reads();
    let missing: Vec<_> = needed.difference(&copied).collect();
    assert!(
        missing.is_empty(),
        "the image's build stage lacks {missing:?}"
    );
    let runtime = dockerfile.split("\nFROM ").nth(2).expect("a runtime stage");
    assert!(
        !runtime.contains("COPY pipelines"),
        "presets are built in; the image should not ship a copy nothing reads"
    );
}
