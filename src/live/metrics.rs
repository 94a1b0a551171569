//! Prometheus metrics of the live relay (registered in the node's registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::{ChildCrashes, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: String,
}

#[derive(Clone)]
pub struct LiveMetrics {
    /// Streams with a publisher connected to this node.
    pub streams: Gauge,
    pub segments_uploaded: Counter,
    pub segments_dropped: Family<ReasonLabels, Counter>,
    pub upload_failures: Counter,
    /// One PUT of one segment.
    pub upload_seconds: Histogram,
    /// From a segment closing to it being in the store.
    pub upload_lag_seconds: Histogram,
    pub spool_bytes: Gauge,
    pub posters: Counter,
    pub publishes: Family<ProtocolLabels, Counter>,
    pub refused: Family<ReasonLabels, Counter>,
    /// Streams this node encodes renditions of now.
    pub transcodes: Gauge,
    /// Transcodes stopped or never started, by reason (no_capacity, overloaded,
    /// pipeline).
    pub transcode_failures: Family<ReasonLabels, Counter>,
    /// Streams this node took from another one, by reason (`handover`: its
    /// publisher came back here; `orphan`: ended for a node that is gone).
    pub takeovers: Family<ReasonLabels, Counter>,
    /// Streams another node took from this one.
    pub leases_lost: Counter,
    /// `media_node_child_crashes_total`, shared with the jobs' children.
    child_crashes: ChildCrashes,
}

impl LiveMetrics {
    pub fn register(metrics: &Metrics) -> LiveMetrics {
        let live = LiveMetrics {
            streams: Gauge::default(),
            segments_uploaded: Counter::default(),
            segments_dropped: Family::default(),
            upload_failures: Counter::default(),
            // 5 ms to ~80 s.
            upload_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            // Explicit around the 1 s objective, so p99 < 1 s is checkable.
            upload_lag_seconds: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            spool_bytes: Gauge::default(),
            posters: Counter::default(),
            publishes: Family::default(),
            refused: Family::default(),
            transcodes: Gauge::default(),
            transcode_failures: Family::default(),
            takeovers: Family::default(),
            leases_lost: Counter::default(),
            child_crashes: metrics.child_crashes(),
        };
        metrics.with_registry(|r| {
            r.register(
                "live_streams",
                "Live streams with a publisher on this node",
                live.streams.clone(),
            );
            r.register(
                "live_segments_uploaded",
                "Live segments stored in the object store",
                live.segments_uploaded.clone(),
            );
            r.register(
                "live_segments_dropped",
                "Live segments given up, by reason (spool_full, spool_io, spool_lost, lease_lost)",
                live.segments_dropped.clone(),
            );
            r.register(
                "live_upload_failures",
                "Failed attempts to store a live segment or playlist (each is retried)",
                live.upload_failures.clone(),
            );
            r.register(
                "live_upload_seconds",
                "Time of one successful live segment upload",
                live.upload_seconds.clone(),
            );
            r.register(
                "live_upload_lag_seconds",
                "From a live segment closing to it being in the object store",
                live.upload_lag_seconds.clone(),
            );
            r.register(
                "live_spool_bytes",
                "Bytes of live segments waiting in the local spool",
                live.spool_bytes.clone(),
            );
            r.register("live_posters", "Live posters written", live.posters.clone());
            r.register(
                "live_publishes",
                "Publishers accepted, by protocol",
                live.publishes.clone(),
            );
            r.register(
                "live_publish_refused",
                "Publishers refused, by reason (unknown_key, already_live, unavailable)",
                live.refused.clone(),
            );
            r.register(
                "live_transcodes",
                "Live streams this node encodes renditions of",
                live.transcodes.clone(),
            );
            r.register(
                "live_transcode_failures",
                "Live renditions not encoded, by reason (no_capacity, overloaded, pipeline, crashed)",
                live.transcode_failures.clone(),
            );
            r.register(
                "live_takeovers",
                "Live streams this node took over from another node, by reason (handover, orphan)",
                live.takeovers.clone(),
            );
            r.register(
                "live_leases_lost",
                "Live streams another node took over from this one",
                live.leases_lost.clone(),
            );
        });
        live
    }

    pub fn dropped(&self, reason: &str) {
        self.segments_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn took_over(&self, reason: &str) {
        self.takeovers
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn transcode_failed(&self, reason: &str) {
        self.transcode_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A stream's media process died (`signal`: `SIGSEGV`, ... or `exit`).
    pub fn child_crashed(&self, signal: &str) {
        self.child_crashes.observe("live", signal);
    }

    pub fn published(&self, protocol: &str) {
        self.publishes
            .get_or_create(&ProtocolLabels {
                protocol: protocol.to_string(),
            })
            .inc();
    }
}
