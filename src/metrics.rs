//! Prometheus metrics of the node, rendered at `/metrics` (OpenMetrics text).
//!
//! Counters and histograms are updated where things happen; gauges that describe
//! the shared job store (jobs by status, queue depth) are read from it at scrape
//! time, so every node of a fleet reports the same, true numbers.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::jobs::model::JobStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrashLabels {
    /// `job` (a job's media process) or `live` (a stream's).
    pub kind: String,
    /// `SIGSEGV`, ... or `exit` (ended without a reply).
    pub signal: String,
}

/// `media_node_child_crashes_total{kind,signal}`: media processes that died.
/// Cloned into each part of the node that runs such processes.
#[derive(Clone, Default)]
pub struct ChildCrashes(Family<CrashLabels, Counter>);

impl ChildCrashes {
    pub fn observe(&self, kind: &str, signal: &str) {
        self.0
            .get_or_create(&CrashLabels {
                kind: kind.to_string(),
                signal: signal.to_string(),
            })
            .inc();
    }
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub jobs_running: Gauge,
    jobs_by_status: Family<StatusLabels, Gauge>,
    queue_depth: Gauge,
    job_duration: Family<OutcomeLabels, Histogram>,
    job_failures: Family<CodeLabels, Counter>,
    outputs: Family<KindLabels, Counter>,
    output_bytes: Family<KindLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    child_crashes: ChildCrashes,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("media_node");
        let jobs_running = Gauge::default();
        registry.register(
            "jobs_running",
            "Jobs running on this node",
            jobs_running.clone(),
        );
        let jobs_by_status = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the job store by status",
            jobs_by_status.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Jobs waiting to run (queued)",
            queue_depth.clone(),
        );
        let job_duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            // 0.1 s to ~55 min.
            Histogram::new(exponential_buckets(0.1, 2.0, 16))
        });
        registry.register(
            "job_duration_seconds",
            "Wall time of one job run, by outcome",
            job_duration.clone(),
        );
        let job_failures = Family::<CodeLabels, Counter>::default();
        registry.register(
            "job_failures",
            "Jobs that failed, by error code",
            job_failures.clone(),
        );
        let outputs = Family::<KindLabels, Counter>::default();
        registry.register(
            "outputs",
            "Outputs published by succeeded jobs, by kind (mp4, hls, thumbnail, poster, storyboard, ...)",
            outputs.clone(),
        );
        let output_bytes = Family::<KindLabels, Counter>::default();
        registry.register(
            "output_bytes",
            "Bytes of the outputs published by succeeded jobs, by kind",
            output_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            http_duration.clone(),
        );
        let child_crashes = ChildCrashes::default();
        registry.register(
            "child_crashes",
            "Media processes that died of a signal or without a reply, by kind and signal",
            child_crashes.0.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            jobs_running,
            jobs_by_status,
            queue_depth,
            job_duration,
            job_failures,
            outputs,
            output_bytes,
            http_requests,
            http_duration,
            child_crashes,
        }
    }

    /// The crash counter, for the live relay's media processes.
    pub fn child_crashes(&self) -> ChildCrashes {
        self.child_crashes.clone()
    }

    pub fn observe_child_crash(&self, kind: &str, signal: &str) {
        self.child_crashes.observe(kind, signal);
    }

    pub fn observe_failure(&self, code: &str) {
        self.job_failures
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts the entries of a succeeded job's `result.outputs` by kind.
    pub fn observe_outputs(&self, result: &serde_json::Value) {
        for output in result["outputs"].as_array().into_iter().flatten() {
            let Some(kind) = output["kind"].as_str() else {
                continue;
            };
            let labels = KindLabels {
                kind: kind.to_string(),
            };
            self.outputs.get_or_create(&labels).inc();
            if let Some(bytes) = output["bytes"].as_u64() {
                self.output_bytes.get_or_create(&labels).inc_by(bytes);
            }
        }
    }

    pub fn observe_job(&self, outcome: &str, elapsed: Duration) {
        self.job_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_job_counts(&self, counts: &[(JobStatus, u64)]) {
        for (status, n) in counts {
            self.jobs_by_status
                .get_or_create(&StatusLabels {
                    status: status.as_str().to_string(),
                })
                .set(*n as i64);
            if *status == JobStatus::Queued {
                self.queue_depth.set(*n as i64);
            }
        }
    }

    /// Registers more metrics (used by subsystems that own their own).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry)
    }

    pub fn render(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_observed() {
        let m = Metrics::new();
        m.observe_job("succeeded", Duration::from_millis(300));
        m.observe_http("/v1/jobs", "POST", 202, Duration::from_millis(3));
        m.set_job_counts(&[(JobStatus::Queued, 4), (JobStatus::Failed, 1)]);
        m.observe_failure("image_too_large");
        m.observe_outputs(&serde_json::json!({"outputs": [
            {"kind": "thumbnail", "bytes": 100},
            {"kind": "thumbnail", "bytes": 50},
            {"kind": "poster", "bytes": 7}
        ]}));
        let text = m.render();
        assert!(text.contains("media_node_queue_depth 4"), "{text}");
        assert!(
            text.contains("media_node_jobs{status=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "media_node_http_requests_total{route=\"/v1/jobs\",method=\"POST\",status=\"202\"} 1"
        ));
        assert!(text.contains("media_node_job_duration_seconds_count{outcome=\"succeeded\"} 1"));
        assert!(text.contains("media_node_job_failures_total{code=\"image_too_large\"} 1"));
        assert!(
            text.contains("media_node_outputs_total{kind=\"thumbnail\"} 2"),
            "{text}"
        );
        assert!(text.contains("media_node_output_bytes_total{kind=\"thumbnail\"} 150"));
    }
}
