//! The live service: streams, who may publish to them, and the life of a
//! broadcast from the first frame to the replay.
//!
//! One [`Active`] per stream this node relays holds what outlives a single
//! publisher connection: the segmenter (sequence numbers, timestamps carried
//! over a reconnect) and the [`Relay`]. Ingest front ends (RTMP, SRT) ask the
//! service to open a publisher ([`LiveService::open_publisher`]) and feed
//! media into the [`Publisher`] they get.
//!
//! Rules:
//! - an unknown or revoked key is refused; so is a second publisher while one
//!   is connected (it cannot disturb the first);
//! - a publisher that leaves may come back within the profile's reconnect
//!   window and continue the same stream after a discontinuity;
//! - the stream ends when that window passes, or when it is deleted; then the
//!   relay stores what is left and writes the replay;
//! - in a fleet, one node relays a stream at a time, by a lease in the
//!   database (see [`fleet`]): a publisher may come back to another node and
//!   continue the same stream there.

mod fleet;
mod masters;
mod publisher;

pub use publisher::Publisher;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::Track;
use super::key::{self, KeyDigest};
use super::ladder::{Ladder, LadderStart};
use super::lease::Fence;
use super::metrics::LiveMetrics;
use super::pins::{MAX_OPEN_PINS, PinSpec};
use super::poster::{PosterDeps, PosterTap};
use super::registry::{Claim, PinRecord, Registry, RegistryError, StreamRecord, StreamState};
use super::relay::{ClosedMedia, Relay, RelayDeps, RelayStart};
use super::segmenter::{ClosedSegment, Segmenter, SegmenterConfig};
use super::spool::Spool;
use super::worker::{StreamWorker, WorkerConfig};
use crate::presets::live::SOURCE_RENDITION;
use crate::presets::{LiveProfile, Presets};

/// Why a publisher is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownKey,
    AlreadyLive,
    /// The registry cannot be read; the publisher should retry.
    Unavailable,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::AlreadyLive => "already_live",
            Refusal::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("stream not found")]
    NotFound,
    #[error("unknown live profile `{0}`")]
    UnknownProfile(String),
    #[error("the stream has ended")]
    Ended,
    #[error("a pin with this id exists on the stream")]
    PinExists,
    #[error("no such pin on the stream")]
    PinNotFound,
    #[error("at most {0} pins may be open at once")]
    TooManyPins(usize),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What stays of a stream while this node relays it.
struct Active {
    id: Uuid,
    profile: LiveProfile,
    /// The published stream's relay (track `source` when the profile
    /// transcodes).
    relay: Relay,
    /// The renditions, when the profile transcodes.
    ladder: Option<Arc<Ladder>>,
    /// The stream's media process (rendition encodes, poster decodes).
    worker: Arc<StreamWorker>,
    media: Mutex<MediaState>,
    /// The connection that owns the stream now (0: none).
    publisher: AtomicU64,
    kick: Mutex<CancellationToken>,
    /// Publishers the stream has had; a reconnect window only ends the stream
    /// if nobody connected since it started.
    generation: AtomicU64,
    ended: AtomicBool,
    /// This node's lease on the stream; every track's relay passes it.
    fence: Arc<Fence>,
    /// Cancelled when the stream leaves this node (stops the heartbeat).
    stopped: CancellationToken,
}

struct MediaState {
    segmenter: Segmenter,
    /// Wall clock and 90 kHz time of the first segment since the publisher
    /// (re)connected: segment start times follow the media clock from there.
    anchor: Option<(DateTime<Utc>, i64)>,
    input_reported: bool,
}

pub struct LiveService {
    registry: Registry,
    presets: Arc<Presets>,
    metrics: LiveMetrics,
    relay_deps: Arc<RelayDeps>,
    posters: PosterDeps,
    worker: Arc<WorkerConfig>,
    node_id: String,
    /// `live.lease_ms`: how long a stream stays this node's without a renewal.
    lease: Duration,
    active: Mutex<HashMap<Uuid, Arc<Active>>>,
    next_connection: AtomicU64,
    /// Streams this node may encode renditions of at once.
    transcode_slots: Arc<tokio::sync::Semaphore>,
    me: Weak<LiveService>,
}

pub struct LiveDeps {
    pub registry: Registry,
    pub store: crate::store::DynStore,
    pub presets: Arc<Presets>,
    pub metrics: LiveMetrics,
    pub spool: Arc<Spool>,
    pub node_id: String,
    /// `live.lease_ms`.
    pub lease: Duration,
    /// `live.max_transcodes`.
    pub max_transcodes: usize,
    /// What each stream's media process is given.
    pub worker: WorkerConfig,
}

impl LiveService {
    pub fn new(deps: LiveDeps) -> Arc<LiveService> {
        Arc::new_cyclic(|me| LiveService {
            relay_deps: Arc::new(RelayDeps {
                store: deps.store.clone(),
                registry: deps.registry.clone(),
                spool: deps.spool,
                metrics: deps.metrics.clone(),
            }),
            posters: PosterDeps {
                store: deps.store.clone(),
                metrics: deps.metrics.clone(),
                slots: Arc::new(tokio::sync::Semaphore::new(super::poster::MAX_CONCURRENT)),
            },
            worker: Arc::new(deps.worker),
            registry: deps.registry,
            presets: deps.presets,
            metrics: deps.metrics,
            node_id: deps.node_id,
            lease: deps.lease,
            active: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            transcode_slots: Arc::new(tokio::sync::Semaphore::new(deps.max_transcodes)),
            me: me.clone(),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn active_map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Active>>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a stream; returns it and its key (the only time the key exists
    /// in clear).
    pub async fn create(
        &self,
        name: &str,
        profile: &str,
        owner: Option<&str>,
    ) -> Result<(StreamRecord, String), LiveError> {
        if self.presets.live_profile(profile).is_none() {
            return Err(LiveError::UnknownProfile(profile.to_string()));
        }
        let key = key::generate();
        let record = self
            .registry
            .create(Uuid::now_v7(), name, profile, key.digest, owner)
            .await?;
        info!(stream_id = %record.id, profile, "live stream created");
        Ok((record, key.secret))
    }

    /// A stream, with this node's fresh upload counters when it relays it.
    pub async fn get(&self, id: Uuid) -> Result<StreamRecord, LiveError> {
        let mut record = self.registry.get(id).await?.ok_or(LiveError::NotFound)?;
        self.overlay_stats(&mut record);
        Ok(record)
    }

    pub async fn list(
        &self,
        state: Option<StreamState>,
        owner: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StreamRecord>, LiveError> {
        let mut records = self.registry.list(state, owner, limit).await?;
        for record in &mut records {
            self.overlay_stats(record);
        }
        Ok(records)
    }

    fn overlay_stats(&self, record: &mut StreamRecord) {
        let active = self.active_map().get(&record.id).cloned();
        if let Some(active) = active {
            let stats = active.relay.stats();
            record.segments_uploaded = record.segments_uploaded.max(stats.segments_uploaded);
            record.segments_dropped = record.segments_dropped.max(stats.segments_dropped);
            record.upload_lag_ms = stats.upload_lag_ms;
            record.spool_bytes = stats.spool_bytes;
        }
    }

    /// Ends a stream now (the API's `DELETE`): revokes its key, drops its
    /// publisher, and has the relay write the replay.
    pub async fn end(&self, id: Uuid, reason: &str) -> Result<StreamRecord, LiveError> {
        let record = self.registry.get(id).await?.ok_or(LiveError::NotFound)?;
        if record.state != StreamState::Ended {
            self.registry.end(id, reason).await?;
            self.registry
                .end_all_pins(id, crate::clock::now_ms())
                .await?;
            info!(stream_id = %id, reason, "live stream ended");
        }
        let active = self.active_map().get(&id).cloned();
        if let Some(active) = active {
            self.wind_down(&active);
        } else if record.state == StreamState::Live && !record.replay_written {
            // Relayed by no node right now (its node is gone, or restarted
            // without it): this node takes the lease and writes the replay. A
            // node still holding the lease writes it itself when its next
            // renewal finds the stream ended.
            let asked = Instant::now();
            if self
                .registry
                .adopt_orphan(id, &self.node_id, self.lease, Duration::ZERO, reason)
                .await?
            {
                self.resume_relay(&record, true, asked).await?;
            }
        }
        self.get(id).await
    }

    /// Ends a stream this node holds (its reconnect window ran out here);
    /// nothing if it ended meanwhile or another node took it (the heartbeat
    /// acts on both).
    async fn end_held(&self, active: &Arc<Active>, reason: &str) -> Result<(), LiveError> {
        if self
            .registry
            .end_held(active.id, &self.node_id, reason)
            .await?
        {
            self.registry
                .end_all_pins(active.id, crate::clock::now_ms())
                .await?;
            info!(stream_id = %active.id, reason, "live stream ended");
            self.wind_down(active);
        }
        Ok(())
    }

    /// The stream left this node (its replay is written, or another node
    /// took it).
    fn forget(&self, active: &Arc<Active>) {
        active.stopped.cancel();
        let mut map = self.active_map();
        if map.get(&active.id).is_some_and(|a| Arc::ptr_eq(a, active)) {
            map.remove(&active.id);
        }
    }

    /// Pins a product from now on; the playlists carry it from their next
    /// update.
    pub async fn pin(&self, id: Uuid, spec: &PinSpec) -> Result<PinRecord, LiveError> {
        let record = self.registry.get(id).await?.ok_or(LiveError::NotFound)?;
        if record.state == StreamState::Ended {
            return Err(LiveError::Ended);
        }
        let open = self
            .registry
            .pins(id)
            .await?
            .iter()
            .filter(|p| p.end_ms.is_none())
            .count();
        if open >= MAX_OPEN_PINS {
            return Err(LiveError::TooManyPins(MAX_OPEN_PINS));
        }
        let pin = PinRecord {
            id: spec.id.clone(),
            spec: serde_json::to_string(spec).unwrap_or_default(),
            attributes: spec.attributes(),
            start_ms: crate::clock::now_ms(),
            end_ms: None,
        };
        if !self.registry.add_pin(id, &pin).await? {
            return Err(LiveError::PinExists);
        }
        self.pins_changed(id);
        info!(stream_id = %id, pin = %pin.id, "product pinned");
        Ok(pin)
    }

    /// Unpins a product now (again: no change).
    pub async fn unpin(&self, id: Uuid, pin: &str) -> Result<PinRecord, LiveError> {
        self.registry.get(id).await?.ok_or(LiveError::NotFound)?;
        match self.registry.end_pin(id, pin).await? {
            None => return Err(LiveError::PinNotFound),
            Some(true) => {
                self.pins_changed(id);
                info!(stream_id = %id, pin, "product unpinned");
            }
            Some(false) => {}
        }
        self.registry
            .pins(id)
            .await?
            .into_iter()
            .find(|p| p.id == pin)
            .ok_or(LiveError::PinNotFound)
    }

    pub async fn pins(&self, id: Uuid) -> Result<Vec<PinRecord>, LiveError> {
        self.registry.get(id).await?.ok_or(LiveError::NotFound)?;
        Ok(self.registry.pins(id).await?)
    }

    fn pins_changed(&self, id: Uuid) {
        if let Some(active) = self.active_map().get(&id) {
            active.relay.pins_changed();
            if let Some(ladder) = &active.ladder {
                ladder.pins_changed();
            }
        }
    }

    /// The renditions of a stream this node relays with a transcoding
    /// profile: the source, then each rung.
    pub fn renditions(&self, id: Uuid) -> Option<Vec<Rendition>> {
        let active = self.active_map().get(&id).cloned()?;
        let ladder = active.ladder.as_ref()?;
        let mut out = vec![Rendition {
            name: SOURCE_RENDITION.to_string(),
            encoded: false,
            width: None,
            height: None,
            codec: None,
            segments_uploaded: active.relay.stats().segments_uploaded,
        }];
        for rung in &ladder.rungs {
            let info = rung.info();
            out.push(Rendition {
                name: rung.name.clone(),
                encoded: ladder.encoding(),
                width: (info.width > 0).then_some(info.width),
                height: (info.height > 0).then_some(info.height),
                codec: info.codec,
                segments_uploaded: rung.relay.stats().segments_uploaded,
            });
        }
        Some(out)
    }

    /// Stops the stream's publisher (if any) and lets the relay finish.
    fn wind_down(&self, active: &Arc<Active>) {
        if active.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        active
            .kick
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancel();
        // Anything the segmenter holds goes out as the last segment.
        let last = {
            let mut media = active.media.lock().unwrap_or_else(|p| p.into_inner());
            media.segmenter.finish()
        };
        if let Some(segment) = last {
            self.hand_over(active, segment);
        }
        active.relay.end();
        if let Some(ladder) = &active.ladder {
            ladder.end();
        }
        let me = self.me.clone();
        let active = active.clone();
        tokio::spawn(async move {
            // The relay may have to wait for the store for a long time; the
            // stream leaves the map once its replay is written.
            active.relay.join(std::time::Duration::MAX).await;
            if let Some(ladder) = &active.ladder {
                ladder.join(std::time::Duration::MAX).await;
            }
            let Some(service) = me.upgrade() else { return };
            if active.ladder.is_some() && !active.fence.is_lost() {
                service.write_replay_master(&active).await;
            }
            service.forget(&active);
        });
    }

    /// Called by ingest when a publisher presents `key`.
    pub async fn open_publisher(
        &self,
        presented: &str,
        protocol: &'static str,
    ) -> Result<Publisher, Refusal> {
        let refused = |r: Refusal| {
            self.metrics.refused(r.reason());
            r
        };
        if !key::well_formed(presented) {
            return Err(refused(Refusal::UnknownKey));
        }
        let record = match self.registry.by_key(KeyDigest::of(presented)).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(refused(Refusal::UnknownKey)),
            Err(e) => {
                warn!(error = %e, "cannot look up a stream key");
                return Err(refused(Refusal::Unavailable));
            }
        };
        // Ingest may drop this future at any await (deadline, shutdown): a
        // claim whose publisher never gets on air is let go (the guard).
        let claim = self.acquire(&record).await.map_err(refused)?;
        let active = match self.active_for(&record, claim.asked).await {
            Ok(active) => active,
            Err(e) => {
                warn!(error = %e, "cannot open the stream's relay");
                return Err(refused(Refusal::Unavailable));
            }
        };
        claim.disarm();
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        if active.ended.load(Ordering::Acquire)
            || active
                .publisher
                .compare_exchange(0, connection, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Err(refused(Refusal::AlreadyLive));
        }
        active.generation.fetch_add(1, Ordering::AcqRel);
        let kick = CancellationToken::new();
        *active.kick.lock().unwrap_or_else(|p| p.into_inner()) = kick.clone();
        {
            let mut media = active.media.lock().unwrap_or_else(|p| p.into_inner());
            media.anchor = None;
            media.input_reported = false;
        }
        self.metrics.streams.inc();
        self.metrics.published(protocol);
        info!(stream_id = %record.id, protocol, "publisher connected");
        let poster = PosterTap::new(
            self.posters.clone(),
            active.worker.clone(),
            record.id,
            active.profile.poster_interval(),
            active.profile.poster_width,
        );
        Ok(Publisher::new(
            self.me.clone(),
            active,
            connection,
            kick,
            poster,
        ))
    }

    /// The stream's [`Active`], created on its first publisher on this node;
    /// the lease it holds was claimed at `asked`.
    async fn active_for(
        &self,
        record: &StreamRecord,
        asked: Instant,
    ) -> Result<Arc<Active>, LiveError> {
        let current = self.active_map().get(&record.id).cloned();
        if let Some(active) = current.filter(|a| !a.fence.is_lost()) {
            active.fence.renewed(asked);
            return Ok(active);
        }
        self.resume_relay(record, false, asked).await
    }

    /// Starts relaying a stream on this node from what the registry holds of
    /// it (the first publisher, a reconnect after a restart, a handover from
    /// another node), or only to write its replay (`ending`). The lease it
    /// holds was claimed at `asked`.
    async fn resume_relay(
        &self,
        record: &StreamRecord,
        ending: bool,
        asked: Instant,
    ) -> Result<Arc<Active>, LiveError> {
        let profile = self
            .presets
            .live_profile(&record.profile)
            .or_else(|| self.presets.live_profile("default"))
            .cloned()
            .ok_or_else(|| LiveError::UnknownProfile(record.profile.clone()))?;
        let source = match profile.transcode {
            Some(_) => Track::rendition(record.id, SOURCE_RENDITION),
            None => Track::relayed(record.id),
        };
        let existing = self.registry.segments(&source).await?;
        let resumed = !existing.is_empty();
        let mut rung_segments = Vec::new();
        for rung in profile.transcode.iter().flat_map(|t| &t.rungs) {
            let track = Track::rendition(record.id, &rung.name);
            rung_segments.push((self.registry.segments(&track).await?, track));
        }
        // From here on nothing awaits: checking the map and starting the relay
        // happen under its lock, so two publishers racing in here never start
        // two relays for one stream.
        let mut map = self.active_map();
        if let Some(active) = map.get(&record.id).filter(|a| !a.fence.is_lost()) {
            return Ok(active.clone());
        }
        let fence = Arc::new(Fence::new(self.lease, asked));
        let start = |track: Track, existing: Vec<_>, reports: bool| {
            Relay::start(
                self.relay_deps.clone(),
                RelayStart {
                    track,
                    window: profile.window,
                    target_s: profile.target_s(),
                    existing,
                    reports,
                    completes_replay: profile.transcode.is_none(),
                    fence: fence.clone(),
                },
            )
        };
        let relay = start(source, existing, true);
        let mut config = SegmenterConfig::new(profile.segment_ticks());
        config.max_ticks = profile.max_segment_ticks();
        let mut segmenter = Segmenter::new(config.clone());
        if resumed {
            segmenter.resume();
        }
        let ladder = profile.transcode.clone().map(|spec| {
            let relays = rung_segments
                .into_iter()
                .map(|(existing, track)| start(track, existing, false))
                .collect();
            let permit = if ending {
                None
            } else {
                self.transcode_slots.clone().try_acquire_owned().ok()
            };
            if permit.is_none() && !ending {
                self.metrics.transcode_failed("no_capacity");
                info!(stream_id = %record.id, "no transcode slot free; relaying the source only");
            }
            (spec, relays, permit)
        });
        let worker = StreamWorker::new(record.id, self.worker.clone(), self.metrics.clone());
        let active = Arc::new_cyclic(|me: &Weak<Active>| Active {
            id: record.id,
            worker: worker.clone(),
            ladder: ladder.map(|(spec, relays, permit)| {
                let me = me.clone();
                Ladder::new(LadderStart {
                    stream: record.id,
                    spec,
                    relays,
                    resumed,
                    segmenter: config.clone(),
                    clock: Arc::new(move |segment| match me.upgrade() {
                        Some(active) => active.wall_clock(segment),
                        None => Utc::now(),
                    }),
                    metrics: self.metrics.clone(),
                    permit,
                    worker,
                })
            }),
            profile,
            relay,
            media: Mutex::new(MediaState {
                segmenter,
                anchor: None,
                input_reported: false,
            }),
            publisher: AtomicU64::new(0),
            kick: Mutex::new(CancellationToken::new()),
            generation: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            fence,
            stopped: CancellationToken::new(),
        });
        map.insert(record.id, active.clone());
        drop(map);
        self.spawn_heartbeat(&active);
        if active.ladder.is_some() && !ending {
            self.spawn_live_master(&active);
        }
        if ending {
            self.wind_down(&active);
        }
        Ok(active)
    }

    /// Picks up, after a restart, the streams this node was relaying: their
    /// spooled segments are stored, and each either gets its publisher back
    /// within the reconnect window or ends with a replay.
    pub async fn recover(&self) -> Result<(), LiveError> {
        let spooled = self.relay_deps.spool.streams().unwrap_or_default();
        for id in spooled {
            let Some(record) = self.registry.get(id).await? else {
                continue;
            };
            if record.replay_written {
                self.relay_deps.spool.close_stream(id).await;
                continue;
            }
            let asked = Instant::now();
            let Some(ended) = self.reclaim(&record).await? else {
                // Another node relays it now and numbers its segments after
                // these: they are dropped, never listed.
                let dropped = self.relay_deps.spool.discard_stream(id).await;
                for _ in 0..dropped {
                    self.metrics.dropped("lease_lost");
                }
                info!(stream_id = %id, dropped, "stream taken over by another node; spool dropped");
                continue;
            };
            let active = self.resume_relay(&record, ended, asked).await?;
            info!(stream_id = %id, ended, "resumed a live stream left by an earlier run");
            if !ended {
                self.start_reconnect_window(&active);
            }
        }
        Ok(())
    }

    /// Takes back the lease on a stream an earlier run of this node relayed:
    /// `Some(ended)` when this node has it, `None` when another node does.
    async fn reclaim(&self, record: &StreamRecord) -> Result<Option<bool>, LiveError> {
        if record.state != StreamState::Ended {
            match self
                .registry
                .claim(record.id, &self.node_id, self.lease, false)
                .await?
            {
                Claim::Taken { .. } => return Ok(Some(false)),
                Claim::Held { .. } => return Ok(None),
                Claim::Ended => {}
            }
        }
        // Ended: this node writes the replay if it still holds the stream or
        // nobody does.
        let held = record.node.as_deref() == Some(self.node_id.as_str())
            && matches!(
                self.registry
                    .renew(record.id, &self.node_id, self.lease, false)
                    .await?,
                super::registry::Renewal::Held { .. }
            );
        let ours = held
            || self
                .registry
                .adopt_orphan(
                    record.id,
                    &self.node_id,
                    self.lease,
                    Duration::ZERO,
                    "node_lost",
                )
                .await?;
        Ok(ours.then_some(true))
    }

    /// Ends the stream if nobody publishes to it within the reconnect window.
    fn start_reconnect_window(&self, active: &Arc<Active>) {
        let me = self.me.clone();
        let active = active.clone();
        let generation = active.generation.load(Ordering::Acquire);
        tokio::spawn(async move {
            tokio::time::sleep(active.profile.reconnect_window()).await;
            let Some(service) = me.upgrade() else { return };
            let nobody_came = active.generation.load(Ordering::Acquire) == generation
                && active.publisher.load(Ordering::Acquire) == 0;
            if !nobody_came || active.ended.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = service.end_held(&active, "publisher_left").await {
                warn!(stream_id = %active.id, error = %e, "cannot end the stream; another node ends it once its lease lapses");
            }
        });
    }

    fn publisher_left(&self, active: &Arc<Active>, connection: u64) {
        if active
            .publisher
            .compare_exchange(connection, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        self.metrics.streams.dec();
        if active.ended.load(Ordering::Acquire) {
            return;
        }
        let last = {
            let mut media = active.media.lock().unwrap_or_else(|p| p.into_inner());
            let last = media.segmenter.finish();
            media.segmenter.resume();
            last
        };
        if let Some(segment) = last {
            self.hand_over(active, segment);
        }
        info!(stream_id = %active.id, "publisher left; waiting for a reconnect");
        self.start_reconnect_window(active);
    }

    fn hand_over(&self, active: &Active, segment: ClosedSegment) {
        let duration_us = segment.duration_ticks * 100 / 9;
        let started_at = active.wall_clock(&segment);
        active.relay.segment(ClosedMedia {
            data: segment.data,
            duration_us,
            started_at,
            discontinuity: segment.discontinuity,
            independent: segment.independent,
        });
    }

    /// On shutdown: publishers are dropped (they reconnect to the restarted
    /// node), and relays get `grace` to store what they hold; the spool keeps
    /// the rest for the next start.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let active: Vec<Arc<Active>> = self.active_map().values().cloned().collect();
        for a in &active {
            a.kick.lock().unwrap_or_else(|p| p.into_inner()).cancel();
        }
        let deadline = tokio::time::Instant::now() + grace;
        for a in &active {
            let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
            if a.ended.load(Ordering::Acquire) {
                a.relay.join(left()).await;
                if let Some(ladder) = &a.ladder {
                    ladder.join(left()).await;
                }
            }
        }
        // Live streams may go on on another node at once (the publishers were
        // dropped); an ended one keeps its lease until it lapses, so this node
        // finishes its replay from the spool when it comes back.
        let live: Vec<Uuid> = active
            .iter()
            .filter(|a| !a.ended.load(Ordering::Acquire))
            .map(|a| a.id)
            .collect();
        let release = fleet::release_all(&self.registry, &self.node_id, &live);
        if tokio::time::timeout(Duration::from_secs(2), release)
            .await
            .is_err()
        {
            warn!("cannot release the live streams' leases; they lapse on their own");
        }
    }
}

/// A rendition of a transcoding stream, as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    pub name: String,
    /// Encoded on this node now (false for the source, for rungs when no
    /// transcode slot was free or while encoding is stopped).
    pub encoded: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub codec: Option<String>,
    pub segments_uploaded: u64,
}

impl Active {
    /// Wall clock of a segment's first frame: segment start times follow the
    /// media clock from the first segment since the publisher (re)connected.
    fn wall_clock(&self, segment: &ClosedSegment) -> DateTime<Utc> {
        let duration_us = segment.duration_ticks * 100 / 9;
        let mut media = self.media.lock().unwrap_or_else(|p| p.into_inner());
        let (wall, dts) = *media.anchor.get_or_insert_with(|| {
            let now = Utc::now();
            (
                now - chrono::Duration::microseconds(duration_us as i64),
                segment.start_dts,
            )
        });
        wall + chrono::Duration::microseconds((segment.start_dts - dts) * 100 / 9)
    }
}
