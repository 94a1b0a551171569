//! The relay: one tokio task per stream that spools each closed segment, uploads
//! it, and publishes the playlists.
//!
//! Order is the whole point. Segments are stored strictly in sequence; the live
//! playlist is rebuilt from stored segments only and uploaded after them, so a
//! viewer never finds a listed segment missing. When the store fails, the task
//! keeps accepting segments into the spool and retries the oldest one with
//! backoff (250 ms doubling to 5 s, for as long as it takes): nothing is given
//! up because storage stumbled. When the stream ends, the task stores whatever
//! is left, then writes the replay playlist (every segment, every pin,
//! `EXT-X-ENDLIST`) and exits.
//!
//! Media never waits for any of this: ingest hands a closed segment over a
//! channel and goes on.
//!
//! In a fleet, playlists are written only while this node holds the stream's
//! lease ([`Fence`]): while it is unconfirmed they wait (as for a store that
//! is down), and once another node has taken the stream the relay stops and
//! drops what its spool still held of it (the new node numbers its segments
//! after those, and no playlist lists them).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use super::Track;
use super::lease::Fence;
use super::metrics::LiveMetrics;
use super::playlist::{self, LiveSegment, Pin};
use super::registry::{PinRecord, Registry, SegmentRecord, UploadStats};
use super::spool::{Spool, SpoolError};
use crate::store::{DynStore, ObjectKey, PutOptions, StoreError, Visibility};

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// While uploads fail, how often the stream's counters are written to the registry.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Segments never change once stored.
pub const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";
/// The live playlist changes every segment.
pub const LIVE_PLAYLIST_CACHE: &str = "public, max-age=1";
/// The replay is written once, but may be written again after a restart.
pub const REPLAY_CACHE: &str = "public, max-age=300";

/// Store keys of a stream's objects.
pub struct StreamKeys;

impl StreamKeys {
    /// The live playlist: the media playlist of a relayed stream, or the
    /// master playlist of one whose profile transcodes.
    pub fn playlist(stream: Uuid) -> String {
        format!("live/{stream}/index.m3u8")
    }
    pub fn replay(stream: Uuid) -> String {
        format!("live/{stream}/replay.m3u8")
    }
    pub fn poster(stream: Uuid) -> String {
        format!("live/{stream}/poster.jpg")
    }
    /// Relative to the playlists.
    pub fn segment_name(sequence: u64) -> String {
        format!("{sequence:08}.ts")
    }
}

/// A segment the segmenter closed.
#[derive(Debug, Clone)]
pub struct ClosedMedia {
    pub data: Bytes,
    pub duration_us: u64,
    /// Wall clock of its first frame.
    pub started_at: DateTime<Utc>,
    pub discontinuity: bool,
    /// Starts with a keyframe.
    pub independent: bool,
}

enum Msg {
    /// To the spooler: a segment to write to the spool.
    Segment(ClosedMedia, Instant),
    /// To the uploader: a segment now in the spool.
    Spooled(Pending),
    PinsChanged,
    End,
}

pub struct RelayDeps {
    pub store: DynStore,
    pub registry: Registry,
    pub spool: Arc<Spool>,
    pub metrics: LiveMetrics,
}

/// The handle ingest and the API hold.
pub struct Relay {
    tx: mpsc::UnboundedSender<Msg>,
    stats: Arc<Mutex<UploadStats>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What a relay starts from: the track's segments so far (after a reconnect or
/// a restart).
pub struct RelayStart {
    pub track: Track,
    pub window: usize,
    pub target_s: u64,
    pub existing: Vec<SegmentRecord>,
    /// This track's counters are the stream's (what the API reports): the
    /// published stream's track.
    pub reports: bool,
    /// Writing this track's replay completes the stream's replay (a relayed
    /// stream). With renditions, the service writes the master replay after
    /// every track's and records it.
    pub completes_replay: bool,
    /// This node's lease on the stream.
    pub fence: Arc<Fence>,
}

impl Relay {
    pub fn start(deps: Arc<RelayDeps>, start: RelayStart) -> Relay {
        let (tx, rx) = mpsc::unbounded_channel();
        let (spooled_tx, spooled_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(UploadStats::default()));
        let spooler = Spooler {
            deps: deps.clone(),
            track: start.track.clone(),
            next_sequence: start.existing.last().map(|s| s.sequence + 1).unwrap_or(0),
            gap: false,
            stats: stats.clone(),
            fence: start.fence.clone(),
        };
        let mut worker = Worker::new(deps, start, stats.clone());
        let span = info_span!(
            "live_relay",
            stream_id = %worker.track.stream,
            rendition = %worker.track.rendition
        );
        // Spooling never waits for the store: a segment is on disk (and
        // survives a crash) as soon as it closes, however long an upload
        // hangs.
        tokio::spawn(spooler.run(rx, spooled_tx).instrument(span.clone()));
        let task = tokio::spawn(
            async move {
                worker.recover().await;
                worker.run(spooled_rx).await;
            }
            .instrument(span),
        );
        Relay {
            tx,
            stats,
            task: Mutex::new(Some(task)),
        }
    }

    /// Hands over a closed segment. Never blocks.
    pub fn segment(&self, media: ClosedMedia) {
        let _ = self.tx.send(Msg::Segment(media, Instant::now()));
    }

    /// Pins were added or closed: the playlists are written again.
    pub fn pins_changed(&self) {
        let _ = self.tx.send(Msg::PinsChanged);
    }

    /// The stream is over: store what is left, write the replay, stop.
    pub fn end(&self) {
        let _ = self.tx.send(Msg::End);
    }

    pub fn stats(&self) -> UploadStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the task to stop (after [`Relay::end`]), at most `limit`.
    pub async fn join(&self, limit: Duration) -> bool {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        match task {
            Some(task) => tokio::time::timeout(limit, task).await.is_ok(),
            None => true,
        }
    }
}

/// Writes closed segments to the spool, in order, and hands them to the
/// uploader.
struct Spooler {
    deps: Arc<RelayDeps>,
    track: Track,
    next_sequence: u64,
    /// A segment was dropped; the next one starts after a discontinuity.
    gap: bool,
    stats: Arc<Mutex<UploadStats>>,
    fence: Arc<Fence>,
}

impl Spooler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, tx: mpsc::UnboundedSender<Msg>) {
        while let Some(msg) = rx.recv().await {
            let out = match msg {
                Msg::Segment(media, closed_at) => match self.spool(media, closed_at).await {
                    Some(pending) => Msg::Spooled(pending),
                    None => continue,
                },
                other => other,
            };
            if tx.send(out).is_err() {
                break;
            }
        }
    }

    async fn spool(&mut self, media: ClosedMedia, closed_at: Instant) -> Option<Pending> {
        if self.fence.is_lost() {
            // The new holder numbers its segments after the registered ones:
            // registering more here could take one of its numbers.
            self.deps.metrics.dropped("lease_lost");
            return None;
        }
        let sequence = self.next_sequence;
        let bytes = media.data.len() as u64;
        match self
            .deps
            .spool
            .write(&self.track, sequence, media.data)
            .await
        {
            Ok(()) => {}
            Err(err) => {
                let reason = match err {
                    SpoolError::Full { .. } => "spool_full",
                    SpoolError::Io(_) => "spool_io",
                };
                warn!(error = %err, "live segment dropped");
                self.deps.metrics.dropped(reason);
                self.gap = true;
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .segments_dropped += 1;
                return None;
            }
        }
        let record = SegmentRecord {
            sequence,
            duration_us: media.duration_us,
            started_at: media.started_at.timestamp_millis(),
            discontinuity: media.discontinuity || std::mem::take(&mut self.gap),
            independent: media.independent,
            bytes,
            stored: false,
        };
        // The row makes the spooled file recoverable after a restart; if the
        // database hiccups the upload still goes on, and the row is written
        // again (idempotently) when the segment is stored.
        if let Err(e) = self.deps.registry.add_segment(&self.track, &record).await {
            warn!(error = %e, sequence, "cannot record the spooled segment yet");
        }
        self.next_sequence += 1;
        self.deps
            .metrics
            .spool_bytes
            .set(self.deps.spool.used() as i64);
        debug!(sequence, bytes, "segment spooled");
        Some(Pending { record, closed_at })
    }
}

struct Pending {
    record: SegmentRecord,
    closed_at: Instant,
}

struct Worker {
    deps: Arc<RelayDeps>,
    track: Track,
    reports: bool,
    completes_replay: bool,
    window: usize,
    target_s: u64,
    /// Spooled, not yet stored, in order.
    pending: VecDeque<Pending>,
    /// Stored, in order: what playlists list.
    stored: Vec<LiveSegment>,
    pins: Vec<Pin>,
    playlist_dirty: bool,
    /// A spooled segment was lost; the next one starts after a discontinuity.
    gap: bool,
    ending: bool,
    stats: Arc<Mutex<UploadStats>>,
    stats_written: Instant,
    fence: Arc<Fence>,
}

impl Worker {
    fn new(deps: Arc<RelayDeps>, start: RelayStart, stats: Arc<Mutex<UploadStats>>) -> Worker {
        let mut worker = Worker {
            deps,
            track: start.track,
            reports: start.reports,
            completes_replay: start.completes_replay,
            window: start.window,
            target_s: start.target_s,
            pending: VecDeque::new(),
            stored: Vec::new(),
            pins: Vec::new(),
            playlist_dirty: false,
            gap: false,
            ending: false,
            stats,
            stats_written: Instant::now(),
            fence: start.fence,
        };
        let now = Instant::now();
        for record in start.existing {
            if record.stored {
                worker.stored.push(worker.live_segment(&record));
            } else {
                worker.pending.push_back(Pending {
                    record,
                    closed_at: now,
                });
            }
        }
        worker
    }

    fn live_segment(&self, record: &SegmentRecord) -> LiveSegment {
        LiveSegment {
            sequence: record.sequence,
            uri: StreamKeys::segment_name(record.sequence),
            duration_s: record.duration_us as f64 / 1e6,
            discontinuity: record.discontinuity,
            independent: record.independent,
            started_at: DateTime::from_timestamp_millis(record.started_at).unwrap_or_default(),
        }
    }

    /// Before the first segment: the stream's pins (after a restart or a
    /// reconnect, the playlists keep them). Spooled segments a previous run
    /// left are in `pending` already; any whose file is gone is skipped when
    /// its turn comes.
    async fn recover(&mut self) {
        if let Ok(pins) = self.deps.registry.pins(self.track.stream).await {
            self.pins = pins.iter().map(pin_of).collect();
        }
        self.publish_stats();
    }

    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut backoff = BACKOFF_MIN;
        let mut detached = false;
        loop {
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg).await;
            }
            if self.fence.is_lost() {
                self.give_up().await;
                break;
            }
            let idle = self.pending.is_empty() && !self.playlist_dirty;
            if idle && detached {
                // The handle was dropped without `end`: what was spooled is
                // stored, but only `end` may write a replay.
                break;
            }
            if idle && !self.ending {
                match rx.recv().await {
                    Some(msg) => self.handle(msg).await,
                    None => detached = true,
                }
                continue;
            }
            let result = if idle {
                self.finish().await
            } else {
                self.step().await
            };
            match result {
                Ok(true) => break,
                Ok(false) => backoff = BACKOFF_MIN,
                Err(err) => {
                    self.deps.metrics.upload_failures.inc();
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "live upload failed; will retry");
                    self.publish_stats();
                    if self.stats_written.elapsed() >= STATS_EVERY {
                        self.write_stats().await;
                    }
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    // Keep taking segments into the spool while waiting.
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            msg = rx.recv(), if !self.ending && !detached => match msg {
                                Some(msg) => self.handle(msg).await,
                                None => detached = true,
                            },
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.deps.spool.close_track(&self.track).await;
        info!("relay done");
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Spooled(mut pending) => {
                pending.record.discontinuity |= std::mem::take(&mut self.gap);
                self.pending.push_back(pending);
                self.publish_stats();
            }
            // The spooler takes these; never sent here.
            Msg::Segment(..) => {}
            Msg::PinsChanged => {
                match self.deps.registry.pins(self.track.stream).await {
                    Ok(pins) => self.pins = pins.iter().map(pin_of).collect(),
                    Err(e) => warn!(error = %e, "cannot read pins"),
                }
                self.playlist_dirty = !self.stored.is_empty();
            }
            Msg::End => self.ending = true,
        }
    }

    /// Another node relays the stream now: what the spool holds of this track
    /// is dropped, unstored (see the module notes).
    async fn give_up(&mut self) {
        let dropped = self.pending.len();
        for pending in self.pending.drain(..) {
            self.deps
                .spool
                .remove(&self.track, pending.record.sequence)
                .await;
            self.deps.metrics.dropped("lease_lost");
        }
        self.deps
            .metrics
            .spool_bytes
            .set(self.deps.spool.used() as i64);
        info!(dropped, "another node took the stream over; relay stopped");
    }

    /// Stores the oldest pending segment, or the playlist once all are stored.
    /// `Ok(false)`: progress, more to do.
    async fn step(&mut self) -> Result<bool, StoreError> {
        let Some(head) = self.pending.front() else {
            self.upload_live_playlist(false).await?;
            self.playlist_dirty = false;
            return Ok(false);
        };
        let record = head.record.clone();
        let closed_at = head.closed_at;
        if !self.deps.spool.has(&self.track, record.sequence).await {
            // Removed behind our back (disk trouble, an operator): it cannot be
            // stored, and retrying would block the stream for good. The
            // playlists skip it with a discontinuity.
            warn!(
                sequence = record.sequence,
                "spooled segment is gone; skipped"
            );
            self.deps.metrics.dropped("spool_lost");
            self.pending.pop_front();
            match self.pending.front_mut() {
                Some(next) => next.record.discontinuity = true,
                None => self.gap = true,
            }
            self.stats_mut().segments_dropped += 1;
            self.publish_stats();
            return Ok(false);
        }
        let key = self.key(&StreamKeys::segment_name(record.sequence))?;
        let path = self.deps.spool.path(&self.track, record.sequence);
        let started = Instant::now();
        self.deps
            .store
            .put_file(&key, &path, &segment_options(SEGMENT_CACHE, "video/mp2t"))
            .await?;
        self.deps
            .metrics
            .upload_seconds
            .observe(started.elapsed().as_secs_f64());
        self.deps
            .metrics
            .upload_lag_seconds
            .observe(closed_at.elapsed().as_secs_f64());
        self.deps.metrics.segments_uploaded.inc();
        self.pending.pop_front();
        self.deps.spool.remove(&self.track, record.sequence).await;
        self.deps
            .metrics
            .spool_bytes
            .set(self.deps.spool.used() as i64);
        self.stored.push(self.live_segment(&record));
        self.playlist_dirty = true;
        self.stats_mut().segments_uploaded += 1;
        self.publish_stats();
        let stats = self.reports.then(|| self.stats());
        let recorded = self
            .deps
            .registry
            .segment_stored(&self.track, &record, stats)
            .await;
        if let Err(e) = recorded {
            // The object is stored; the row catches up with the next segment.
            warn!(error = %e, sequence = record.sequence, "cannot record the stored segment");
        }
        self.stats_written = Instant::now();
        debug!(sequence = record.sequence, "segment stored");
        Ok(false)
    }

    async fn upload_live_playlist(&self, ended: bool) -> Result<(), StoreError> {
        if self.stored.is_empty() {
            return Ok(());
        }
        if !self.fence.holds() {
            // Retried with the upload backoff; a lost lease ends the relay.
            return Err(StoreError::Unavailable(
                "this node's lease on the stream is not confirmed; playlists wait".into(),
            ));
        }
        let mut text = playlist::live(&self.stored, self.window, self.target_s, &self.pins);
        if ended {
            // Players stop polling at ENDLIST; the window is kept.
            text.push_str("#EXT-X-ENDLIST\n");
        }
        let key = self.key("index.m3u8")?;
        self.deps
            .store
            .put_bytes(
                &key,
                Bytes::from(text),
                &segment_options(LIVE_PLAYLIST_CACHE, "application/vnd.apple.mpegurl"),
            )
            .await
    }

    /// Everything is stored and the stream is over: the replay, then done.
    async fn finish(&mut self) -> Result<bool, StoreError> {
        if !self.fence.holds() {
            return Err(StoreError::Unavailable(
                "this node's lease on the stream is not confirmed; the replay waits".into(),
            ));
        }
        if let Ok(pins) = self.deps.registry.pins(self.track.stream).await {
            self.pins = pins.iter().map(pin_of).collect();
        }
        if !self.stored.is_empty() {
            self.upload_live_playlist(true).await?;
            let text = playlist::replay(&self.stored, self.target_s, &self.pins);
            let key = self.key("replay.m3u8")?;
            self.deps
                .store
                .put_bytes(
                    &key,
                    Bytes::from(text),
                    &segment_options(REPLAY_CACHE, "application/vnd.apple.mpegurl"),
                )
                .await?;
        }
        if self.completes_replay
            && let Err(e) = self
                .deps
                .registry
                .set_replay_written(self.track.stream)
                .await
        {
            warn!(error = %e, "cannot record the replay; it is written again at the next start");
        }
        self.write_stats().await;
        info!(segments = self.stored.len(), "replay written");
        Ok(true)
    }

    fn key(&self, name: &str) -> Result<ObjectKey, StoreError> {
        Ok(ObjectKey::parse(format!(
            "{}/{name}",
            self.track.key_prefix()
        ))?)
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, UploadStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats(&self) -> UploadStats {
        *self.stats_mut()
    }

    /// Refreshes the counters the API reads from this node.
    fn publish_stats(&self) {
        let lag = self
            .pending
            .front()
            .map(|p| p.closed_at.elapsed().as_millis() as u64)
            .unwrap_or(0);
        let spool: u64 = self.pending.iter().map(|p| p.record.bytes).sum();
        let mut stats = self.stats_mut();
        stats.upload_lag_ms = lag;
        stats.spool_bytes = spool;
    }

    async fn write_stats(&mut self) {
        self.publish_stats();
        if !self.reports {
            return;
        }
        let stats = self.stats();
        if let Err(e) = self.deps.registry.set_stats(self.track.stream, stats).await {
            debug!(error = %e, "cannot write stream counters");
        }
        self.stats_written = Instant::now();
    }
}

fn pin_of(record: &PinRecord) -> Pin {
    Pin {
        id: record.id.clone(),
        start: DateTime::from_timestamp_millis(record.start_ms).unwrap_or_default(),
        end: record.end_ms.and_then(DateTime::from_timestamp_millis),
        attributes: record.attributes.clone(),
    }
}

fn segment_options(cache: &str, content_type: &str) -> PutOptions {
    PutOptions {
        content_type: Some(content_type.to_string()),
        cache_control: Some(cache.to_string()),
        visibility: Visibility::Public,
        owner: None,
    }
}
