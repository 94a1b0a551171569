//! The API contract, checked by a fuzzer: schemathesis (from PyPI, in the
//! venv `scripts/test` installs and names in `TEST_VENV`) reads the node's
//! served `/openapi.json`, generates requests for every operation, sends them
//! with the token, and checks every answer: no server error, a documented
//! status code, a body matching its schema and its documented content type.
//!
//! The run is reproducible (fixed seed, no example database); a finding is a
//! mistake in the document or in the code, fixed in whichever is wrong.

#![cfg(feature = "test-support")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Node, TOKEN};

/// Examples per operation: the acceptance asks for at least 30.
const EXAMPLES: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_holds_for_generated_requests() {
    let venv = std::env::var("TEST_VENV").unwrap_or_else(|_| {
        panic!(
            "TEST_VENV is not set: run scripts/test, which installs schemathesis into \
             .tools/venv, or set TEST_VENV to a venv with tests/browser/requirements.lock"
        )
    });
    let node = Node::start().await;
    let schemathesis = Path::new(&venv).join("bin/schemathesis");
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join("contract");
    std::fs::create_dir_all(&report).unwrap();
    let args: Vec<String> = vec![
        "run".into(),
        node.url("/openapi.json"),
        "--url".into(),
        node.url(""),
        "--header".into(),
        format!("Authorization: Bearer {TOKEN}"),
        "--checks".into(),
        "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance".into(),
        "--max-examples".into(),
        EXAMPLES.to_string(),
        "--seed".into(),
        "16".into(),
        "--generation-database".into(),
        "none".into(),
        "--workers".into(),
        "1".into(),
        "--no-color".into(),
        "--report".into(),
        "junit".into(),
        "--report-dir".into(),
        report.display().to_string(),
    ];
    let cwd = report.clone();
    let out = tokio::task::spawn_blocking(move || {
        // It keeps state in `.schemathesis/` of its working directory.
        Command::new(schemathesis)
            .args(&args)
            .current_dir(&cwd)
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures (report in {}):\n{stdout}\n{}\nnode log:\n{}",
        report.display(),
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    // A run that tested nothing would also exit 0: every operation of the
    // served document was tested.
    let doc = node.get_json("/openapi.json").await;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(operations >= 15, "{operations} operations");
    assert!(
        stdout.contains(&format!("Tested: {operations}\n")),
        "schemathesis did not test all {operations} operations:\n{stdout}"
    );
}
