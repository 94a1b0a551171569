//! Streams in a fleet: one node relays a stream at a time, by a lease in the
//! database renewed by heartbeat.
//!
//! - A publisher whose stream another node holds is *held*
//!   ([`LiveService::acquire`]) until that lease is renewed (the holder is
//!   alive and on air: refused `already_live`, so a leaked key cannot take a
//!   stream from another node) or lapses (taken over: the handover).
//! - The holder renews every third of the lease ([`LiveService::spawn_heartbeat`])
//!   and learns there that the stream was ended (by the API, on any node) or
//!   taken over ([`LiveService::abandon`]).
//! - Every node sweeps for orphans ([`LiveService::spawn_sweeper`]): streams
//!   whose lease lapsed and whose publisher did not come back within the
//!   reconnect window are ended (`node_lost`) and their replay written from
//!   the segments that reached the store.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use super::{Active, LiveError, LiveService, Refusal};
use crate::live::registry::{Claim, Orphan, Registry, Renewal, StreamRecord, StreamState};

/// How often a held newcomer asks again.
const HOLD_POLL: Duration = Duration::from_millis(250);
/// Orphans looked at per sweep.
const SWEEP_BATCH: u32 = 16;

/// A claim on a stream that is released if the publisher it was taken for
/// never gets on air (the connection dropped while the relay was starting).
pub(super) struct ClaimGuard {
    service: Weak<LiveService>,
    id: Uuid,
    /// When the claim was asked for: the lease counts from there.
    pub(super) asked: Instant,
    armed: bool,
}

impl ClaimGuard {
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(service) = self.service.upgrade() else {
            return;
        };
        if service.active_map().contains_key(&self.id) {
            // The stream's own heartbeat keeps (or lets go of) it.
            return;
        }
        let (registry, id, node) = (service.registry.clone(), self.id, service.node_id.clone());
        tokio::spawn(async move {
            let _ = registry.release(id, &node).await;
        });
    }
}

impl LiveService {
    /// Takes the stream's lease for a publisher, holding it while another
    /// node's lease is fresh (at most one lease and a poll).
    pub(super) async fn acquire(&self, record: &StreamRecord) -> Result<ClaimGuard, Refusal> {
        let deadline = Instant::now() + self.lease + HOLD_POLL;
        let mut first_seen: Option<i64> = None;
        loop {
            let asked = Instant::now();
            let claim = self
                .registry
                .claim(record.id, &self.node_id, self.lease, true)
                .await
                .map_err(|e| {
                    warn!(stream_id = %record.id, error = %e, "cannot claim the stream");
                    Refusal::Unavailable
                })?;
            match claim {
                Claim::Taken { from } => {
                    if let Some(from) = from.filter(|_| record.state == StreamState::Live) {
                        self.metrics.took_over("handover");
                        info!(stream_id = %record.id, from = %from, "stream taken over from another node");
                    }
                    return Ok(ClaimGuard {
                        service: self.me.clone(),
                        id: record.id,
                        asked,
                        armed: true,
                    });
                }
                Claim::Ended => return Err(Refusal::UnknownKey),
                Claim::Held { node, expires_at } => {
                    let first = *first_seen.get_or_insert(expires_at);
                    if expires_at > first || Instant::now() >= deadline {
                        info!(stream_id = %record.id, holder = %node, "stream is live on another node");
                        return Err(Refusal::AlreadyLive);
                    }
                    tokio::time::sleep(HOLD_POLL).await;
                }
            }
        }
    }

    /// Renews the stream's lease every third of it for as long as this node
    /// keeps the stream, and acts on what the renewal finds.
    pub(super) fn spawn_heartbeat(&self, active: &Arc<Active>) {
        let me = self.me.clone();
        let weak = Arc::downgrade(active);
        let stopped = active.stopped.clone();
        let period = self.lease / 3;
        let span = info_span!("live_lease", stream_id = %active.id);
        tokio::spawn(
            async move {
                loop {
                    tokio::select! {
                        () = stopped.cancelled() => return,
                        () = tokio::time::sleep(period) => {}
                    }
                    let (Some(service), Some(active)) = (me.upgrade(), weak.upgrade()) else {
                        return;
                    };
                    if !service.renew(&active).await {
                        return;
                    }
                }
            }
            .instrument(span),
        );
    }

    /// One renewal; false once the stream is no longer this node's.
    async fn renew(&self, active: &Arc<Active>) -> bool {
        let asked = Instant::now();
        let publishing = active.publisher.load(Ordering::Acquire) != 0;
        match self
            .registry
            .renew(active.id, &self.node_id, self.lease, publishing)
            .await
        {
            Ok(Renewal::Held { ended }) => {
                active.fence.renewed(asked);
                if ended && !active.ended.load(Ordering::Acquire) {
                    info!("stream ended elsewhere; winding down");
                    self.wind_down(active);
                }
                true
            }
            Ok(Renewal::Lost) => {
                self.abandon(active);
                false
            }
            Err(e) => {
                // The fence lapses on its own if this goes on.
                warn!(error = %e, "cannot renew the stream's lease");
                true
            }
        }
    }

    /// Another node took the stream over: this node's publisher (if any) is
    /// dropped and, the fence being lost, its relays stop without spooling,
    /// storing or writing a playlist again (see [`LiveService::wind_down`]).
    pub(super) fn abandon(&self, active: &Arc<Active>) {
        active.fence.lose();
        self.metrics.leases_lost.inc();
        warn!(stream_id = %active.id, "another node took the stream over; stopping here");
        self.wind_down(active);
    }

    /// Sweeps for orphans every half lease until `stop`.
    pub fn spawn_sweeper(self: &Arc<Self>, stop: CancellationToken) {
        let me = Arc::downgrade(self);
        let period = self.lease / 2;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(period) => {}
                }
                let Some(service) = me.upgrade() else { return };
                if let Err(e) = service.sweep().await {
                    warn!(error = %e, "cannot look for orphaned live streams");
                }
            }
        });
    }

    async fn sweep(&self) -> Result<(), LiveError> {
        for orphan in self.registry.orphans(SWEEP_BATCH).await? {
            let id = orphan.record.id;
            if self.active_map().contains_key(&id) {
                continue;
            }
            if let Err(e) = self.adopt(&orphan).await {
                warn!(stream_id = %id, error = %e, "cannot end an orphaned stream");
            }
        }
        Ok(())
    }

    /// Ends an orphan once its reconnect window has passed, and writes its
    /// replay here.
    async fn adopt(&self, orphan: &Orphan) -> Result<(), LiveError> {
        let record = &orphan.record;
        let window = match record.state {
            StreamState::Live => self
                .presets
                .live_profile(&record.profile)
                .map_or(Duration::ZERO, |p| p.reconnect_window()),
            _ => Duration::ZERO,
        };
        if Duration::from_millis(orphan.expired_ms.max(0) as u64) < window {
            return Ok(());
        }
        let asked = Instant::now();
        let adopted = self
            .registry
            .adopt_orphan(record.id, &self.node_id, self.lease, window, "node_lost")
            .await?;
        if !adopted {
            return Ok(());
        }
        self.registry
            .end_all_pins(record.id, crate::clock::now_ms())
            .await?;
        self.metrics.took_over("orphan");
        info!(stream_id = %record.id, from = ?record.node, "orphaned stream ended; writing its replay");
        self.resume_relay(record, true, asked).await?;
        Ok(())
    }
}

/// Lets go of every lease in `ids` now, so other nodes take those streams
/// at once (a node shutting down).
pub(super) async fn release_all(registry: &Registry, node: &str, ids: &[Uuid]) {
    for id in ids {
        if let Err(e) = registry.release(*id, node).await {
            warn!(stream_id = %id, error = %e, "cannot release the stream's lease");
        }
    }
}
