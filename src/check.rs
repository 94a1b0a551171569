//! `media-node check`: whether this configuration can run, one line per
//! dependency (data dir, job store, object store, bucket CORS on S3, presets,
//! GStreamer elements), before a node is started on it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::config::{Config, StoreKind};
use crate::jobs::queue as job_queue;
use crate::media;
use crate::node::required_elements;
use crate::presets::{Kind, Presets};
use crate::store::bucket_cors;
use crate::store::s3::S3Store;
use crate::store::{self, StoreError};

/// No check waits longer on a backend than this.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How a check came out. A warning names something that may be right for
/// this deployment (bucket CORS, when a CDN answers CORS in front of it) and
/// does not fail the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One line of `media-node check`.
pub struct CheckLine {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl CheckLine {
    fn new(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> CheckLine {
        CheckLine {
            name: name.into(),
            verdict,
            detail: detail.into(),
        }
    }

    fn of<E: fmt::Display>(name: impl Into<String>, result: Result<String, E>) -> CheckLine {
        match result {
            Ok(detail) => CheckLine::new(name, Verdict::Ok, detail),
            Err(e) => CheckLine::new(name, Verdict::Fail, e.to_string()),
        }
    }
}

/// Every check, in order.
pub async fn run(config: &Config) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        lines.push(CheckLine::new(
            "data dir",
            Verdict::Fail,
            format!("{}: {e}", config.data_dir.display()),
        ));
    }
    lines.push(job_store(config).await);
    lines.push(object_store(config).await);
    if config.store == StoreKind::S3 {
        lines.push(bucket_cors(config).await);
    }
    let presets = Presets::load(config.pipelines_dir.as_deref());
    lines.push(CheckLine::of(
        "presets",
        presets.as_ref().map(presets_summary),
    ));
    lines.push(gstreamer(presets.ok().as_ref()));
    lines
}

async fn job_store(config: &Config) -> CheckLine {
    let db_url = config.db_url();
    let shown = db_url.split('?').next().unwrap_or_default().to_string();
    let result = bounded(async {
        let queue = job_queue::open(&db_url).await?;
        queue.ping().await?;
        Ok::<_, job_queue::QueueError>(shown)
    })
    .await;
    CheckLine::of("job store", result)
}

async fn object_store(config: &Config) -> CheckLine {
    let result = bounded(async {
        store::open(config).await?.check().await?;
        Ok::<_, StoreError>("reachable".to_string())
    })
    .await;
    CheckLine::of(
        format!("object store ({})", config.store_kind_name()),
        result,
    )
}

/// On S3, players read the bucket (or a CDN in front of it), not `/media`:
/// its CORS rules decide which pages may play.
async fn bucket_cors(config: &Config) -> CheckLine {
    const NAME: &str = "bucket CORS";
    let spool = config.data_dir.join("tmp").join("s3");
    let rules =
        bounded(async { S3Store::open(&config.s3, &spool).await?.cors_rules().await }).await;
    let rules = match rules {
        Ok(rules) => rules,
        Err(e) => return CheckLine::new(NAME, Verdict::Warn, format!("not read: {e}")),
    };
    let problems = bucket_cors::problems(rules.as_deref(), &config.media.cors_origins);
    if problems.is_empty() {
        CheckLine::new(
            NAME,
            Verdict::Ok,
            format!("pages of {} can play", origins_shown(config)),
        )
    } else {
        CheckLine::new(
            NAME,
            Verdict::Warn,
            format!(
                "pages of {} cannot play from the bucket unless a CDN answers CORS: {} \
                 (docs/fleet.md shows the rule to set)",
                origins_shown(config),
                problems.join("; ")
            ),
        )
    }
}

fn origins_shown(config: &Config) -> String {
    match &config.media.cors_origins {
        crate::config::CorsOrigins::Any => "any origin".into(),
        crate::config::CorsOrigins::List(list) => list.join(", "),
    }
}

fn gstreamer(presets: Option<&Presets>) -> CheckLine {
    const NAME: &str = "gstreamer";
    if let Err(e) = media::init() {
        return CheckLine::new(NAME, Verdict::Fail, e.to_string());
    }
    let required = match presets {
        Some(p) => required_elements(p),
        None => media::REQUIRED_ELEMENTS.to_vec(),
    };
    let missing = media::missing_elements(&required);
    if missing.is_empty() {
        CheckLine::new(
            NAME,
            Verdict::Ok,
            format!(
                "{} ({} required elements present)",
                gstreamer::version_string(),
                required.len()
            ),
        )
    } else {
        CheckLine::new(
            NAME,
            Verdict::Fail,
            format!("missing elements: {}", missing.join(", ")),
        )
    }
}

/// `check` answers within [`BACKEND_TIMEOUT`] per backend, however it hangs.
async fn bounded<T, E: fmt::Display>(
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(BACKEND_TIMEOUT, work).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", BACKEND_TIMEOUT.as_secs())),
    }
}

/// Every kind of preset with its names, e.g.
/// `ladders: default, small; thumbnails: default, search; tags: ...; live: ...`.
fn presets_summary(presets: &Presets) -> String {
    Kind::ALL
        .iter()
        .map(|&kind| format!("{}: {}", kind.folder(), presets.names(kind).join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}
