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
//!   relay stores what is left and writes the replay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::Track;
use super::key::{self, KeyDigest};
use super::ladder::{Ladder, LadderError, LadderStart, Session};
use super::metrics::LiveMetrics;
use super::pins::{MAX_OPEN_PINS, PinSpec};
use super::poster::{PosterDeps, PosterTap};
use super::registry::{InputInfo, PinRecord, Registry, RegistryError, StreamRecord, StreamState};
use super::relay::{
    ClosedMedia, LIVE_PLAYLIST_CACHE, REPLAY_CACHE, Relay, RelayDeps, RelayStart, StreamKeys,
};
use super::segmenter::{AudioFrame, ClosedSegment, Segmenter, SegmenterConfig, VideoFrame};
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
    ) -> Result<(StreamRecord, String), LiveError> {
        if self.presets.live_profile(profile).is_none() {
            return Err(LiveError::UnknownProfile(profile.to_string()));
        }
        let key = key::generate();
        let record = self
            .registry
            .create(Uuid::now_v7(), name, profile, key.digest)
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
        limit: u32,
    ) -> Result<Vec<StreamRecord>, LiveError> {
        let mut records = self.registry.list(state, limit).await?;
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
            // Relayed by no node right now (e.g. the publisher had left): this
            // node writes the replay.
            self.resume_relay(&record, true).await?;
        }
        self.get(id).await
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
            if active.ladder.is_some() {
                service.write_replay_master(&active).await;
            }
            service.active_map().remove(&active.id);
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
        let active = match self.active_for(&record).await {
            Ok(active) => active,
            Err(e) => {
                warn!(error = %e, "cannot open the stream's relay");
                return Err(refused(Refusal::Unavailable));
            }
        };
        // Every await is behind us before the claim: ingest may drop this future
        // at any await (deadline, shutdown), and a claim must never leak.
        match self.registry.set_live(record.id, &self.node_id, None).await {
            Ok(true) => {}
            Ok(false) => return Err(refused(Refusal::UnknownKey)),
            Err(e) => {
                warn!(error = %e, "cannot mark the stream live");
                return Err(refused(Refusal::Unavailable));
            }
        }
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
        Ok(Publisher {
            service: self.me.clone(),
            active,
            connection,
            kick,
            poster,
            starting: Some(StartBuffer::default()),
            metadata: InputInfo::default(),
            closed: false,
            session: None,
            ladder_off: false,
            crashes: 0,
        })
    }

    /// The stream's [`Active`], created on its first publisher.
    async fn active_for(&self, record: &StreamRecord) -> Result<Arc<Active>, LiveError> {
        if let Some(active) = self.active_map().get(&record.id) {
            return Ok(active.clone());
        }
        self.resume_relay(record, false).await
    }

    async fn resume_relay(
        &self,
        record: &StreamRecord,
        ending: bool,
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
        if let Some(active) = map.get(&record.id) {
            return Ok(active.clone());
        }
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
        });
        map.insert(record.id, active.clone());
        drop(map);
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
            let ended = record.state == StreamState::Ended;
            let active = self.resume_relay(&record, ended).await?;
            info!(stream_id = %id, ended, "resumed a live stream left by an earlier run");
            if !ended {
                self.start_reconnect_window(&active);
            }
        }
        Ok(())
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
            if let Err(e) = service.end(active.id, "publisher_left").await {
                warn!(stream_id = %active.id, error = %e, "cannot end the stream; retried at the next start");
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
    }

    /// Writes the live master playlist of a transcoding stream once its
    /// renditions have stored segments (and again when one more has), so it
    /// never lists a variant whose playlist is missing.
    fn spawn_live_master(&self, active: &Arc<Active>) {
        let me = self.me.clone();
        let active = Arc::downgrade(active);
        tokio::spawn(async move {
            let mut written = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let (Some(service), Some(active)) = (me.upgrade(), active.upgrade()) else {
                    return;
                };
                if active.ended.load(Ordering::Acquire) {
                    return;
                }
                let ready = service
                    .variants(&active, "index.m3u8", |r| r.stats().segments_uploaded > 0)
                    .await;
                let all = 1 + active
                    .ladder
                    .as_ref()
                    .map_or(0, |l| if l.encodes() { l.rungs.len() } else { 0 });
                if ready.len() > written
                    && ready.iter().any(|v| v.uri.starts_with(SOURCE_RENDITION))
                {
                    if let Err(e) = service
                        .put_master(
                            &active,
                            StreamKeys::playlist(active.id),
                            &ready,
                            LIVE_PLAYLIST_CACHE,
                        )
                        .await
                    {
                        warn!(stream_id = %active.id, error = %e, "cannot store the master playlist; retrying");
                        continue;
                    }
                    written = ready.len();
                }
                if written >= all {
                    return;
                }
            }
        });
    }

    /// After every track's replay: the master replay, then the stream's
    /// replay is recorded as written.
    async fn write_replay_master(&self, active: &Active) {
        let mut stored = Vec::new();
        let mut tracks = vec![SOURCE_RENDITION.to_string()];
        if let Some(ladder) = &active.ladder {
            tracks.extend(ladder.rungs.iter().map(|r| r.name.clone()));
        }
        for name in tracks {
            let track = Track::rendition(active.id, &name);
            let any = self
                .registry
                .segments(&track)
                .await
                .map(|s| s.iter().any(|s| s.stored))
                .unwrap_or(false);
            if any {
                stored.push(name);
            }
        }
        let variants = self
            .variants(active, "replay.m3u8", |_| true)
            .await
            .into_iter()
            .filter(|v| {
                stored
                    .iter()
                    .any(|name| v.uri.starts_with(&format!("{name}/")))
            })
            .collect::<Vec<_>>();
        let mut backoff = std::time::Duration::from_millis(250);
        if !variants.is_empty() {
            while let Err(e) = self
                .put_master(
                    active,
                    StreamKeys::replay(active.id),
                    &variants,
                    REPLAY_CACHE,
                )
                .await
            {
                warn!(stream_id = %active.id, error = %e, "cannot store the master replay; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
        if let Err(e) = self.registry.set_replay_written(active.id).await {
            warn!(stream_id = %active.id, error = %e, "cannot record the replay; it is written again at the next start");
        }
        info!(stream_id = %active.id, variants = variants.len(), "master replay written");
    }

    /// The variants of a transcoding stream whose relay passes `ready`, with
    /// `playlist` as each one's media playlist name.
    async fn variants(
        &self,
        active: &Active,
        playlist: &str,
        ready: fn(&Relay) -> bool,
    ) -> Vec<crate::media::hls::Variant> {
        let input = self
            .registry
            .get(active.id)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.input)
            .unwrap_or_default();
        let audio = input.audio_codec.clone();
        let codecs = |video: Option<String>| {
            [video, audio.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(",")
        };
        let frame_rate = input.frame_rate.unwrap_or(30.0);
        let mut out = Vec::new();
        if ready(&active.relay) {
            let bps = u64::from(input.bitrate_kbps.unwrap_or(3000)) * 1000;
            out.push(crate::media::hls::Variant {
                uri: format!("{SOURCE_RENDITION}/{playlist}"),
                bandwidth: bps * 5 / 4,
                average_bandwidth: bps,
                codecs: codecs(input.video_codec.clone()),
                width: input.width.unwrap_or(0),
                height: input.height.unwrap_or(0),
                frame_rate,
            });
        }
        for rung in active.ladder.iter().flat_map(|l| &l.rungs) {
            if !ready(&rung.relay) {
                continue;
            }
            let info = rung.info();
            // The rung's video plus the publisher's audio (not measured:
            // 128 kbit/s is what encoders send by default).
            let bps = (u64::from(rung.video_kbps) + 128) * 1000;
            out.push(crate::media::hls::Variant {
                uri: format!("{}/{playlist}", rung.name),
                bandwidth: bps * 5 / 4,
                average_bandwidth: bps,
                codecs: codecs(info.codec),
                width: info.width,
                height: info.height,
                frame_rate,
            });
        }
        out
    }

    async fn put_master(
        &self,
        active: &Active,
        key: String,
        variants: &[crate::media::hls::Variant],
        cache: &str,
    ) -> Result<(), crate::store::StoreError> {
        // Segments cut between the publisher's keyframes do not start with one.
        let independent = active.profile.max_segment_s == 0.0;
        let text = crate::media::hls::master(variants, independent);
        let key = crate::store::ObjectKey::parse(key)?;
        self.relay_deps
            .store
            .put_bytes(
                &key,
                bytes::Bytes::from(text),
                &crate::store::PutOptions {
                    content_type: Some("application/vnd.apple.mpegurl".into()),
                    cache_control: Some(cache.into()),
                    visibility: crate::store::Visibility::Public,
                },
            )
            .await
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

/// How long video waits at the start of a publisher for its audio
/// configuration (an FLV sequence header, a TS demuxer's first ADTS frame), so
/// that the first segment lists every track (a track appearing later would
/// start the second segment with a discontinuity). A stream without audio
/// starts this much later.
const AUDIO_WAIT_TICKS: i64 = 90_000;
/// Frames held at most meanwhile (a broken timestamp must not grow it).
const MAX_START_FRAMES: usize = 240;
/// Times a publisher connection starts the renditions again after the
/// stream's media process crashed; then it goes on as the source only.
const MAX_LADDER_RESTARTS: u32 = 3;

#[derive(Default)]
struct StartBuffer {
    video: Vec<VideoFrame>,
    audio: Vec<AudioFrame>,
}

/// One connected publisher: access units in (whatever the protocol), segments
/// out.
pub struct Publisher {
    service: Weak<LiveService>,
    active: Arc<Active>,
    connection: u64,
    kick: CancellationToken,
    poster: Option<PosterTap>,
    /// Frames held at the start until the audio configuration is known.
    starting: Option<StartBuffer>,
    metadata: InputInfo,
    closed: bool,
    /// This connection's rendition encoding, when the profile transcodes.
    session: Option<Session>,
    /// Encoding stopped for the rest of this connection (overloaded, failed).
    ladder_off: bool,
    /// Media process crashes during this connection's encoding.
    crashes: u32,
}

impl Publisher {
    pub fn stream_id(&self) -> Uuid {
        self.active.id
    }

    /// Cancelled when the service wants this publisher gone (stream deleted,
    /// node shutting down).
    pub fn kicked(&self) -> CancellationToken {
        self.kick.clone()
    }

    /// Idle timeout of the stream's profile.
    pub fn idle_timeout(&self) -> std::time::Duration {
        self.active.profile.idle_timeout()
    }

    /// What `onMetaData` said (size and frame rate).
    pub fn metadata(&mut self, width: Option<u32>, height: Option<u32>, frame_rate: Option<f64>) {
        self.metadata.width = width.or(self.metadata.width);
        self.metadata.height = height.or(self.metadata.height);
        self.metadata.frame_rate = frame_rate.or(self.metadata.frame_rate);
    }

    /// The codecs the publisher sends (RFC 6381 strings), once known. Audio
    /// goes into segments from the next one after its codec is known.
    pub fn set_codecs(&mut self, video: Option<String>, audio: Option<String>) {
        self.metadata.video_codec = video;
        self.metadata.audio_codec = audio;
    }

    /// One video access unit (H.264 Annex B, 90 kHz timestamps).
    pub fn video(&mut self, frame: VideoFrame) {
        if let Some(start) = &mut self.starting {
            let waited = start
                .video
                .first()
                .is_some_and(|first| frame.dts - first.dts >= AUDIO_WAIT_TICKS);
            start.video.push(frame);
            if waited || start.video.len() > MAX_START_FRAMES {
                self.start();
            }
            return;
        }
        self.push_video(frame);
    }

    /// One audio access unit (ADTS AAC, 90 kHz timestamps).
    pub fn audio(&mut self, frame: AudioFrame) {
        if let Some(start) = &mut self.starting {
            start.audio.push(frame);
            if self.metadata.audio_codec.is_some() {
                self.start();
            }
            return;
        }
        if let Some(ladder) = &self.active.ladder {
            ladder.audio(&frame);
        }
        let mut media = self.active.media.lock().unwrap_or_else(|p| p.into_inner());
        media.segmenter.push_audio(frame);
    }

    /// The track list is settled: what waited goes to the segmenter, in time
    /// order.
    fn start(&mut self) {
        let Some(start) = self.starting.take() else {
            return;
        };
        let mut audio = start.audio.into_iter().peekable();
        for frame in start.video {
            while let Some(a) = audio.next_if(|a| a.pts <= frame.dts) {
                self.audio(a);
            }
            self.push_video(frame);
        }
        for a in audio {
            self.audio(a);
        }
    }

    fn push_video(&mut self, frame: VideoFrame) {
        if let Some(poster) = &mut self.poster {
            poster.offer(&frame);
        }
        let copy = self.active.ladder.is_some().then(|| frame.clone());
        let audio = self.metadata.audio_codec.is_some();
        let closed = {
            let mut media = self.active.media.lock().unwrap_or_else(|p| p.into_inner());
            media.segmenter.set_audio(audio);
            media.segmenter.push_video(frame)
        };
        if let Some(frame) = copy {
            // The source's lock is released: rung output takes it for the
            // wall clock.
            self.encode(&frame, closed.is_some(), audio);
        }
        if let Some(segment) = closed {
            self.closed_segment(segment);
        }
    }

    /// Feeds the renditions' encoder; `cut` when the source started a segment
    /// with this frame.
    fn encode(&mut self, frame: &VideoFrame, cut: bool, audio: bool) {
        let Some(ladder) = self.active.ladder.clone() else {
            return;
        };
        if self.ladder_off || !ladder.encodes() {
            return;
        }
        ladder.set_audio(audio);
        let stream_id = self.active.id;
        let mut cut = cut;
        if self.session.is_none() {
            if !frame.keyframe {
                return;
            }
            match ladder.begin(frame) {
                Ok(session) => self.session = Some(session),
                Err(e) => {
                    self.ladder_stopped(e);
                    return;
                }
            }
            cut = true;
        }
        let Some(session) = &mut self.session else {
            return;
        };
        if let Err(e) = session.push(frame, cut) {
            if let Some(session) = self.session.take() {
                session.finish();
            }
            match e {
                LadderError::TimestampJump => {
                    // A new session starts at the next keyframe.
                    info!(stream_id = %stream_id, "timestamps jumped; renditions restart at the next keyframe");
                }
                LadderError::Crashed(_) if self.crashes < MAX_LADDER_RESTARTS => {
                    self.crashes += 1;
                    if let Some(service) = self.service.upgrade() {
                        service.metrics.transcode_failed(e.reason());
                    }
                    warn!(stream_id = %stream_id, error = %e, restart = self.crashes,
                        "renditions restart at the next keyframe; the source goes on");
                }
                e => self.ladder_stopped(e),
            }
        }
    }

    fn ladder_stopped(&mut self, e: LadderError) {
        self.ladder_off = true;
        if matches!(e, LadderError::Ending) {
            return;
        }
        if let Some(ladder) = &self.active.ladder {
            ladder.pause();
        }
        if let Some(service) = self.service.upgrade() {
            service.metrics.transcode_failed(e.reason());
        }
        warn!(stream_id = %self.active.id, error = %e, "renditions stopped for this connection; the source goes on");
    }

    fn closed_segment(&mut self, segment: ClosedSegment) {
        let Some(service) = self.service.upgrade() else {
            return;
        };
        let report = {
            let mut media = self.active.media.lock().unwrap_or_else(|p| p.into_inner());
            !std::mem::replace(&mut media.input_reported, true)
        };
        if report {
            let mut input = self.metadata.clone();
            if segment.duration_ticks > 0 {
                input.bitrate_kbps = Some(
                    (segment.data.len() as u64 * 8 * 90 / segment.duration_ticks.max(1)) as u32,
                );
            }
            let registry = service.registry.clone();
            let id = self.active.id;
            tokio::spawn(async move {
                if let Err(e) = registry.set_input(id, &input).await {
                    warn!(stream_id = %id, error = %e, "cannot record the stream's input");
                }
            });
        }
        service.hand_over(&self.active, segment);
    }

    /// The publisher is gone (clean stop, dropped connection, idle, kicked).
    pub fn leave(mut self, reason: &str) {
        info!(stream_id = %self.active.id, reason, "publisher gone");
        self.finish();
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        // A publisher gone within its first second still leaves its media.
        self.start();
        if let Some(session) = self.session.take() {
            session.finish();
        }
        if let Some(service) = self.service.upgrade() {
            service.publisher_left(&self.active, self.connection);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.finish();
    }
}
