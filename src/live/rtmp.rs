//! RTMP ingest front end: creators publish to `rtmp://HOST:1935/live/<key>` from
//! OBS, ffmpeg and the like. This module owns the sockets and the protocol; who
//! may publish, and what happens to the media, is decided behind two traits:
//! [`PublishGate`] (looks the key up) and [`MediaSink`] (receives one publisher's
//! FLV audio/video bodies).
//!
//! The protocol itself is `rml_rtmp` (sans-IO: bytes in, packets and events out)
//! driven from one tokio task per connection. Around it this module adds what a
//! public ingest port needs:
//!
//! - **Admission.** A cap on connections, a lower cap on connections that have not
//!   been accepted as publishers yet (overall and per address), and one deadline
//!   for handshake + `connect` + `publish`. Once publishing, a connection that
//!   sends nothing for `idle_timeout` is dropped, which frees its key for a
//!   reconnect even when the old TCP connection is half-open.
//! - **Refusals the client understands.** An unknown key, a key already live, a
//!   wrong app or a play request gets an `_error` (ffmpeg exits with
//!   `Server error: …`), then a half-close, and the socket is kept just long
//!   enough for the client to read it. A second publisher on a live key is
//!   refused by the gate and never touches the first one.
//! - **Wrong-key slowdown** through [`Throttle`]: an address inside its penalty is
//!   refused before its key is looked at; only wrong keys count.
//! - **Input hardening.** `rml_rtmp` 0.8 panics on some malformed AMF (a command
//!   with fewer than three values, a bare `@setDataFrame`), parses AMF
//!   recursively (a deeply nested value overflows the stack and aborts the whole
//!   process) and reserves whatever message length a peer declares (up to
//!   16 MiB). A [`ChunkGuard`] mirrors its chunk framing, sees every message
//!   before `rml_rtmp` does, and refuses those inputs; calls into the session are
//!   also wrapped in `catch_unwind` as a last line of defence. A control-message
//!   budget bounds what a peer can make the session allocate (every
//!   `createStream` adds an entry to a map inside `rml_rtmp`).
//!
//! Stream keys are secrets: they never appear in logs. Spans carry the peer
//! address and, once a key is presented, an 8-hex-digit fingerprint (the first
//! four bytes of its SHA-256, the same prefix as the digest the registry keeps).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent,
    ServerSessionResult, StreamMetadata,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, trace, warn};

use super::throttle::Throttle;

// ---------------------------------------------------------------------------
// Public interface
// ---------------------------------------------------------------------------

/// Decides who may publish. Implemented by the live service, which looks the key
/// up in its registry and claims the stream for this publisher.
#[async_trait::async_trait]
pub trait PublishGate: Send + Sync + 'static {
    /// `key` is the stream name with any `?query` removed (it may be empty or
    /// junk: it comes straight from the network). `Ok` hands back the sink that
    /// receives this publisher's media; the stream counts as live from then on
    /// until [`MediaSink::close`].
    ///
    /// The returned future may be dropped before it completes (setup deadline,
    /// shutdown), so it must be cancel-safe: claim the stream in a step that
    /// cannot be interrupted halfway, or undo the claim on drop.
    async fn publish(&self, key: &str, peer: SocketAddr) -> Result<Box<dyn MediaSink>, Refusal>;
}

/// Why the gate refused a publisher. Each is answered with an RTMP `_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No stream has this key. Counts as a wrong key for the throttle.
    UnknownKey,
    /// The stream already has a publisher; the newcomer is refused and the
    /// publisher already live is left alone.
    AlreadyLive,
    /// The gate could not decide (store or database down).
    Unavailable,
}

impl Refusal {
    /// Metric label (matches `live_publish_refused`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::AlreadyLive => "already_live",
            Refusal::Unavailable => "unavailable",
        }
    }

    /// RTMP status code and description sent to the client.
    fn status(self) -> (&'static str, &'static str) {
        match self {
            Refusal::UnknownKey => ("NetStream.Publish.BadName", "invalid stream key"),
            Refusal::AlreadyLive => ("NetStream.Publish.BadName", "stream is already live"),
            Refusal::Unavailable => (
                "NetStream.Publish.Failed",
                "service unavailable, try again later",
            ),
        }
    }
}

/// Why a sink refused media; the connection ends on it. Shown in logs, so it
/// must not contain the key.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Receives the media of one publisher.
///
/// Called from the connection's task: every method must return quickly and never
/// block (hand the data to a bounded channel, say). Timestamps are the RTMP
/// message timestamps in milliseconds (FLV DTS; they wrap after about 49.7 days).
pub trait MediaSink: Send {
    /// `@setDataFrame`/`onMetaData` from the publisher (may come again mid-stream).
    fn metadata(&mut self, meta: &StreamMetadata);
    /// One FLV `VIDEODATA` body (no FLV tag header): byte 0 is frame type and
    /// codec id, for AVC byte 1 is the packet type (0 = sequence header).
    /// An error ends the connection ([`CloseReason::BadMedia`]).
    fn video(&mut self, timestamp_ms: u32, body: Bytes) -> Result<(), SinkError>;
    /// One FLV `AUDIODATA` body (no FLV tag header): for AAC byte 1 is the
    /// packet type (0 = AudioSpecificConfig).
    /// An error ends the connection ([`CloseReason::BadMedia`]).
    fn audio(&mut self, timestamp_ms: u32, body: Bytes) -> Result<(), SinkError>;
    /// How long this publisher may send nothing before it is dropped, if not
    /// [`RtmpSettings::idle_timeout`] (a per-stream profile, say). Asked once,
    /// when publishing starts.
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }
    /// The publisher is gone. Called exactly once per sink, whatever the cause,
    /// including a panic or the connection task being dropped.
    fn close(self: Box<Self>, reason: CloseReason);
    /// Cancelled by the service to kick this publisher (the stream was deleted,
    /// say). Asked for once, right after the gate returned the sink; the
    /// connection is closed promptly after cancellation and then [`close`] is
    /// called with [`CloseReason::Kicked`].
    ///
    /// [`close`]: MediaSink::close
    fn kicked(&self) -> CancellationToken;
}

/// Why a publisher's sink was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The publisher ended the stream cleanly (`deleteStream`/`closeStream`).
    Unpublished,
    /// The connection closed or failed without an unpublish.
    Disconnected,
    /// Nothing arrived for `idle_timeout`.
    IdleTimeout,
    /// The publisher broke the protocol or a limit of this server.
    ProtocolError,
    /// The sink refused the media ([`MediaSink::video`]/[`MediaSink::audio`]
    /// returned an error).
    BadMedia,
    /// [`MediaSink::kicked`] was cancelled.
    Kicked,
    /// The server is shutting down.
    Shutdown,
    /// The connection task ended without an orderly close (a panic, or the
    /// runtime dropping the task).
    Aborted,
}

impl CloseReason {
    /// Short label for logs, metrics and the stream's end reason.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Unpublished => "unpublished",
            CloseReason::Disconnected => "disconnected",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::BadMedia => "bad_media",
            CloseReason::Kicked => "kicked",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Aborted => "aborted",
        }
    }
}

/// Limits of the RTMP server.
#[derive(Debug, Clone)]
pub struct RtmpSettings {
    /// A publisher that sends no bytes for this long is dropped (and its key is
    /// free again). OBS and ffmpeg send media continuously.
    pub idle_timeout: Duration,
    /// Handshake, `connect` and `publish` must all be done this soon after the
    /// TCP accept, or the connection is dropped.
    pub handshake_timeout: Duration,
    /// How long the key check of a `publish` may take, counted from the
    /// request: in a fleet a publisher whose stream another node holds is
    /// held until that node's lease is renewed or lapses.
    pub gate_timeout: Duration,
    /// Connections at once; beyond that new ones are closed right away.
    pub max_connections: usize,
    /// Connections at once that are not publishing yet (still in handshake,
    /// connect or the key check). Kept well below `max_connections`: before a
    /// key is checked anybody can connect.
    pub max_pending: usize,
    /// Of `max_pending`, how many one address may hold, so one source cannot
    /// take all the slots a creator needs.
    pub max_pending_per_ip: usize,
    /// Balancers whose connections start with a PROXY protocol header
    /// (`live.proxy_protocol_from`); from anybody else a header is refused.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for RtmpSettings {
    fn default() -> Self {
        RtmpSettings {
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            gate_timeout: Duration::from_secs(15),
            max_connections: 256,
            max_pending: 64,
            max_pending_per_ip: 8,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Accepts RTMP publishers on `listener` until `shutdown` is cancelled, then
/// closes every connection (their sinks get [`CloseReason::Shutdown`]) and
/// returns once all connection tasks have ended.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<dyn PublishGate>,
    throttle: Arc<Mutex<Throttle>>,
    settings: RtmpSettings,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(
        settings.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let admission = Arc::new(Admission::new(&settings));
    let shared = Arc::new(Shared {
        gate,
        throttle,
        settings,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    let mut forget = tokio::time::interval(FORGET_STALE_EVERY);
    forget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = forget.tick() => {
                lock(&shared.throttle).forget_stale(std::time::Instant::now());
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically EMFILE/ENFILE: back off instead of spinning.
                    warn!(error = %err, "rtmp accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "rtmp connection refused: at max_connections");
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!(%peer, error = %err, "rtmp connection lost before setup");
            continue;
        }
        let span = tracing::info_span!(
            "rtmp",
            %peer,
            client = tracing::field::Empty,
            key = tracing::field::Empty
        );
        let (admission, shared, shutdown) = (admission.clone(), shared.clone(), shutdown.clone());
        let wait = shared.settings.handshake_timeout;
        tracker.spawn(
            async move {
                let mut stream = stream;
                // Behind a balancer: the creator's address, from the PROXY
                // header, for the limits, the throttle and the logs.
                let proxies = &shared.settings.trusted_proxies;
                let peer = match tokio::time::timeout(
                    wait,
                    super::proxy::client_address(&mut stream, peer, proxies),
                )
                .await
                {
                    Ok(Ok(client)) => client,
                    Ok(Err(err)) => {
                        info!(%peer, error = %err, "rtmp connection refused");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "rtmp connection dropped: no PROXY header in time");
                        return;
                    }
                };
                if !proxies.is_empty() {
                    tracing::Span::current().record("client", tracing::field::display(peer));
                }
                // Over the pending limits, a connection waits its turn (within
                // the setup deadline) rather than being refused: many creators
                // starting at once behind one NAT or balancer all get in, while
                // unauthenticated connections still never exceed the limits.
                let Some(pending) = admission.admit(peer.ip(), wait, &shutdown).await else {
                    debug!(%peer, "rtmp connection refused: too many pending connections");
                    return;
                };
                let connection = Connection::new(stream, peer, shared, pending);
                connection.run().await;
                drop(slot);
            }
            .instrument(span),
        );
    }

    drop(listener);
    tracker.close();
    tracker.wait().await;
}

// ---------------------------------------------------------------------------
// Limits that are not settings
// ---------------------------------------------------------------------------

/// Bytes read from a socket at a time (one buffer per connection).
const READ_BUFFER: usize = 16 * 1024;
/// Largest audio/video/aggregate message accepted from a publisher. RTMP allows
/// 16 MiB and `rml_rtmp` reserves the declared length up front; a keyframe of a
/// high-bitrate 4K stream is well under this (nginx-rtmp's default is 1 MiB).
const MAX_MEDIA_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest message of any type before publishing starts, and largest command or
/// data (AMF) message at any time. `connect` and `onMetaData` are a few hundred
/// bytes.
const MAX_SMALL_MESSAGE: usize = 64 * 1024;
/// Largest protocol control message (types 1 to 6 are at most 10 bytes).
const MAX_CONTROL_MESSAGE: usize = 64;
/// Chunk streams one connection may use (clients use a handful).
const MAX_CHUNK_STREAMS: usize = 64;
/// Deepest AMF nesting accepted (real clients use 2).
const MAX_AMF_DEPTH: usize = 16;
/// Control results (responses and non-media events) a connection may cause in a
/// burst, and how many it earns back per second. Real publishers cause about ten
/// during setup and then an acknowledgement every few megabytes.
const CONTROL_BURST: f64 = 256.0;
const CONTROL_PER_SECOND: f64 = 8.0;
/// After refusing a client, how long the socket stays half-open so that it reads
/// the `_error` instead of a reset, and how much it may still send meanwhile.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// How often a connection over the pending limits tries again for a slot.
const ADMIT_RETRY: Duration = Duration::from_millis(20);
/// Pause after a failed `accept` (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often addresses that stopped presenting wrong keys are forgotten.
const FORGET_STALE_EVERY: Duration = Duration::from_secs(60);
/// The only RTMP application served.
const APP: &str = "live";
/// RTMP message type of an aggregate (several FLV tags in one message).
const AGGREGATE: u8 = 22;

// ---------------------------------------------------------------------------
// Admission of unauthenticated connections
// ---------------------------------------------------------------------------

/// Counts connections that are not publishing yet, overall and per address.
struct Admission {
    pending: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

impl Admission {
    fn new(settings: &RtmpSettings) -> Admission {
        Admission {
            pending: Arc::new(Semaphore::new(
                settings.max_pending.min(Semaphore::MAX_PERMITS),
            )),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: settings.max_pending_per_ip,
        }
    }

    /// A pending slot for `ip`, waiting up to `wait` for one.
    async fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Option<PendingSlot> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(slot) = self.try_admit(ip) {
                return Some(slot);
            }
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                return None;
            }
            tokio::time::sleep(ADMIT_RETRY).await;
        }
    }

    /// A pending slot for `ip`, if both limits allow one.
    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<PendingSlot> {
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        let mut per_ip = lock(&self.per_ip);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(PendingSlot {
            admission: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

/// Held by a connection until it publishes (or ends); frees both counts on drop.
/// The map holds at most `max_pending` addresses because entries go at zero.
struct PendingSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.admission.per_ip);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain
/// counters and the throttle map).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------

/// What every connection task shares.
struct Shared {
    gate: Arc<dyn PublishGate>,
    throttle: Arc<Mutex<Throttle>>,
    settings: RtmpSettings,
    shutdown: CancellationToken,
}

/// How a connection ends.
#[derive(Debug, Clone, Copy)]
struct Ending {
    /// Passed to the sink, if the connection got one.
    reason: CloseReason,
    /// The client was told why (a refusal, or a clean unpublish): send what is
    /// queued, half-close and let it read before the socket goes.
    polite: bool,
}

impl Ending {
    fn abrupt(reason: CloseReason) -> Ending {
        Ending {
            reason,
            polite: false,
        }
    }

    /// A refusal during setup: no sink exists, the reason is only for the record.
    fn refused() -> Ending {
        Ending {
            reason: CloseReason::ProtocolError,
            polite: true,
        }
    }
}

type Step<T> = Result<T, Ending>;

/// The sink of an accepted publisher. Dropping it without [`Publication::close`]
/// (a panic, a dropped task) still closes the sink, so `close` runs exactly once.
struct Publication {
    sink: Option<Box<dyn MediaSink>>,
    kicked: CancellationToken,
    idle_timeout: Duration,
}

impl Publication {
    fn new(sink: Box<dyn MediaSink>, default_idle_timeout: Duration) -> Publication {
        let kicked = sink.kicked();
        let idle_timeout = sink.idle_timeout().unwrap_or(default_idle_timeout);
        Publication {
            sink: Some(sink),
            kicked,
            idle_timeout,
        }
    }

    fn sink(&mut self) -> Option<&mut (dyn MediaSink + 'static)> {
        self.sink.as_deref_mut()
    }

    fn close(mut self, reason: CloseReason) {
        if let Some(sink) = self.sink.take() {
            sink.close(reason);
        }
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.close(CloseReason::Aborted);
        }
    }
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// Freed once publishing starts.
    pending: Option<PendingSlot>,
    /// End of the setup phase (handshake + connect + publish).
    deadline: Instant,
    guard: ChunkGuard,
    budget: ControlBudget,
    /// Responses not yet written, in the order `rml_rtmp` produced them.
    out: Vec<u8>,
    publication: Option<Publication>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        shared: Arc<Shared>,
        pending: PendingSlot,
    ) -> Connection {
        let deadline = Instant::now() + shared.settings.handshake_timeout;
        Connection {
            stream,
            peer,
            shared,
            pending: Some(pending),
            deadline,
            guard: ChunkGuard::new(),
            budget: ControlBudget::new(),
            out: Vec::new(),
            publication: None,
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0; READ_BUFFER];
        let ending = match self.drive(&mut buf).await {
            Ok(never) => match never {},
            Err(ending) => ending,
        };
        if let Some(publication) = self.publication.take() {
            info!(reason = ending.reason.as_str(), "publisher gone");
            publication.close(ending.reason);
        }
        self.pending = None;
        if ending.polite {
            self.say_goodbye(&mut buf).await;
        }
    }

    /// Runs the connection until it ends; every way out is an [`Ending`].
    async fn drive(&mut self, buf: &mut [u8]) -> Step<std::convert::Infallible> {
        let leftover = self.handshake(buf).await?;
        let (mut session, initial) =
            ServerSession::new(ServerSessionConfig::new()).map_err(|err| {
                warn!(error = %err, "rtmp session could not start");
                Ending::abrupt(CloseReason::ProtocolError)
            })?;
        self.handle(&mut session, initial).await?;
        let mut input: &[u8] = &leftover;
        loop {
            if !input.is_empty() {
                self.guard.inspect(input).map_err(|violation| {
                    debug!(%violation, "rtmp protocol violation");
                    Ending::abrupt(CloseReason::ProtocolError)
                })?;
                let results = handle_input(&mut session, input)?;
                self.handle(&mut session, results).await?;
            }
            self.flush().await?;
            let n = self.read(buf).await?;
            input = &buf[..n];
        }
    }

    /// Runs the RTMP handshake; returns the bytes that followed it.
    async fn handshake(&mut self, buf: &mut [u8]) -> Step<Vec<u8>> {
        let mut handshake = Handshake::new(PeerType::Server);
        loop {
            let n = self.read(buf).await?;
            match handshake.process_bytes(&buf[..n]) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.out.extend_from_slice(&response_bytes);
                    self.flush().await?;
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.out.extend_from_slice(&response_bytes);
                    return Ok(remaining_bytes);
                }
                Err(err) => {
                    debug!(error = %err, "rtmp handshake failed");
                    return Err(Ending::abrupt(CloseReason::ProtocolError));
                }
            }
        }
    }

    /// Acts on what the session produced, strictly in order.
    async fn handle(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Step<()> {
        for result in results {
            let event = match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.spend()?;
                    self.out.extend_from_slice(&packet.bytes);
                    continue;
                }
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    if payload.type_id == AGGREGATE && self.publication.is_some() {
                        // rml_rtmp does not unpack them: the stream would look
                        // alive with no media in it. OBS and ffmpeg never send them.
                        info!("rtmp aggregate messages are not supported");
                        return Err(Ending::abrupt(CloseReason::ProtocolError));
                    }
                    self.spend()?;
                    trace!(type_id = payload.type_id, "rtmp message ignored");
                    continue;
                }
                ServerSessionResult::RaisedEvent(event) => event,
            };
            match event {
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => {
                    if let Some(sink) = self.publication.as_mut().and_then(Publication::sink) {
                        sink.video(timestamp.value, data).map_err(bad_media)?;
                    }
                }
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => {
                    if let Some(sink) = self.publication.as_mut().and_then(Publication::sink) {
                        sink.audio(timestamp.value, data).map_err(bad_media)?;
                    }
                }
                ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                    self.spend()?;
                    if let Some(sink) = self.publication.as_mut().and_then(Publication::sink) {
                        sink.metadata(&metadata);
                    }
                }
                ServerSessionEvent::ConnectionRequested {
                    request_id,
                    app_name,
                } => {
                    self.spend()?;
                    if app_of(&app_name) == APP {
                        let accepted = session.accept_request(request_id);
                        self.queue(accepted)?;
                    } else {
                        info!("rtmp connect refused: unknown application");
                        let rejected = session.reject_request(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "unknown application",
                        );
                        self.queue(rejected)?;
                        return Err(Ending::refused());
                    }
                }
                ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    stream_key,
                    ..
                } => {
                    self.spend()?;
                    self.publish(session, request_id, &stream_key).await?;
                }
                ServerSessionEvent::PublishStreamFinished { .. } => {
                    return Err(Ending {
                        reason: CloseReason::Unpublished,
                        polite: true,
                    });
                }
                ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    info!("rtmp play refused: ingest only");
                    let rejected = session.reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "this server only accepts publishers",
                    );
                    self.queue(rejected)?;
                    return Err(Ending::refused());
                }
                ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                    // releaseStream, FCPublish, FCUnpublish, _checkbw…: clients
                    // do not wait for an answer.
                    self.spend()?;
                    trace!(
                        command = truncated(&command_name, 32),
                        "rtmp command ignored"
                    );
                }
                _ => self.spend()?,
            }
        }
        Ok(())
    }

    /// Answers a `publish`: throttle, gate, then accept or refuse.
    async fn publish(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        stream_name: &str,
    ) -> Step<()> {
        if self.publication.is_some() {
            info!("rtmp publish refused: already publishing on this connection");
            let rejected = session.reject_request(
                request_id,
                "NetStream.Publish.BadName",
                "only one publish per connection",
            );
            self.queue(rejected)?;
            return Err(Ending::refused());
        }
        let key = key_of(stream_name);
        tracing::Span::current().record("key", fingerprint(key).as_str());
        let ip = self.peer.ip();

        let penalty = lock(&self.shared.throttle).wait(ip, std::time::Instant::now());
        if let Some(penalty) = penalty {
            info!(
                retry_in_ms = penalty.as_millis() as u64,
                "rtmp publish refused: too many wrong keys from this address"
            );
            let rejected = session.reject_request(
                request_id,
                "NetStream.Publish.Rejected",
                "too many failed attempts, try again later",
            );
            self.queue(rejected)?;
            return Err(Ending::refused());
        }

        // Whatever is queued goes out before waiting on the gate.
        self.flush().await?;
        let shutdown = self.shared.shutdown.clone();
        let gate = self.shared.gate.clone();
        let decision = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Err(Ending::abrupt(CloseReason::Shutdown)),
            decision = tokio::time::timeout_at(
                self.deadline.max(Instant::now() + self.shared.settings.gate_timeout),
                gate.publish(key, self.peer),
            ) => {
                decision.unwrap_or_else(|_| {
                    warn!("rtmp publish gate did not answer in time");
                    Err(Refusal::Unavailable)
                })
            }
        };

        match decision {
            Ok(sink) => {
                lock(&self.shared.throttle).succeeded(ip);
                // From here on the sink is closed exactly once, whatever happens.
                self.publication = Some(Publication::new(sink, self.shared.settings.idle_timeout));
                let accepted = session.accept_request(request_id);
                self.queue(accepted)?;
                self.pending = None;
                self.guard.publishing();
                info!("publisher accepted");
                Ok(())
            }
            Err(refusal) => {
                if refusal == Refusal::UnknownKey {
                    lock(&self.shared.throttle).failed(ip, std::time::Instant::now());
                }
                info!(reason = refusal.as_str(), "rtmp publish refused");
                let (code, description) = refusal.status();
                let rejected = session.reject_request(request_id, code, description);
                self.queue(rejected)?;
                Err(Ending::refused())
            }
        }
    }

    /// Queues the packets of an accept/reject, in order.
    fn queue(&mut self, results: Result<Vec<ServerSessionResult>, ServerSessionError>) -> Step<()> {
        let results = results.map_err(|err| {
            debug!(error = %err, "rtmp request could not be answered");
            Ending::abrupt(CloseReason::ProtocolError)
        })?;
        for result in results {
            if let ServerSessionResult::OutboundResponse(packet) = result {
                self.out.extend_from_slice(&packet.bytes);
            }
        }
        Ok(())
    }

    /// Charges one control result to the connection's budget.
    fn spend(&mut self) -> Step<()> {
        if self.budget.spend(Instant::now()) {
            Ok(())
        } else {
            debug!("rtmp peer sent too many control messages");
            Err(Ending::abrupt(CloseReason::ProtocolError))
        }
    }

    /// When the current wait gives up: the setup deadline, or the idle timeout
    /// once publishing.
    fn limit(&self) -> (Instant, CloseReason) {
        match &self.publication {
            Some(publication) => (
                Instant::now() + publication.idle_timeout,
                CloseReason::IdleTimeout,
            ),
            None => (self.deadline, CloseReason::ProtocolError),
        }
    }

    /// Reads some bytes; EOF, errors, timeouts, kicks and shutdown end the
    /// connection.
    async fn read(&mut self, buf: &mut [u8]) -> Step<usize> {
        let (until, on_timeout) = self.limit();
        let kicked = self.publication.as_ref().map(|p| p.kicked.clone());
        let shutdown = self.shared.shutdown.clone();
        let n = interruptible(
            self.stream.read(buf),
            until,
            on_timeout,
            &shutdown,
            kicked.as_ref(),
        )
        .await?;
        if n == 0 {
            return Err(Ending::abrupt(CloseReason::Disconnected));
        }
        Ok(n)
    }

    /// Writes everything queued.
    async fn flush(&mut self) -> Step<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let (until, on_timeout) = self.limit();
        let kicked = self.publication.as_ref().map(|p| p.kicked.clone());
        let shutdown = self.shared.shutdown.clone();
        interruptible(
            self.stream.write_all(&self.out),
            until,
            on_timeout,
            &shutdown,
            kicked.as_ref(),
        )
        .await?;
        self.out.clear();
        Ok(())
    }

    /// After a refusal or an unpublish: send what is queued, half-close, and
    /// read until the client hangs up (briefly, and a bounded amount), so it
    /// gets our last words rather than a reset.
    async fn say_goodbye(&mut self, buf: &mut [u8]) {
        let until = Instant::now() + LINGER;
        let _ = tokio::time::timeout_at(until, async {
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
                self.out.clear();
            }
            self.stream.shutdown().await?;
            let mut drained = 0;
            while drained < LINGER_MAX_BYTES {
                match self.stream.read(buf).await? {
                    0 => break,
                    n => drained += n,
                }
            }
            io::Result::Ok(())
        })
        .await;
    }
}

/// Awaits a socket operation unless the time limit passes, the server shuts
/// down or the publisher is kicked. Used for reads (cancel-safe) and for writes
/// that are abandoned together with the connection.
async fn interruptible<T>(
    op: impl Future<Output = io::Result<T>>,
    until: Instant,
    on_timeout: CloseReason,
    shutdown: &CancellationToken,
    kicked: Option<&CancellationToken>,
) -> Step<T> {
    let kicked = async {
        match kicked {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Err(Ending::abrupt(CloseReason::Shutdown)),
        () = kicked => {
            info!("publisher kicked");
            Err(Ending::abrupt(CloseReason::Kicked))
        }
        () = tokio::time::sleep_until(until) => {
            if on_timeout == CloseReason::IdleTimeout {
                info!("rtmp publisher sent nothing for the idle timeout");
            } else {
                debug!("rtmp setup not completed in time");
            }
            Err(Ending::abrupt(on_timeout))
        }
        result = op => result.map_err(|err| {
            debug!(error = %err, "rtmp socket error");
            Ending::abrupt(CloseReason::Disconnected)
        }),
    }
}

/// Ends the connection on media the sink refused.
fn bad_media(err: SinkError) -> Ending {
    info!(error = %err, "publisher sent media the sink refused");
    Ending::abrupt(CloseReason::BadMedia)
}

/// Feeds bytes to the session. `rml_rtmp` indexes into peer-controlled data in a
/// few places; the [`ChunkGuard`] keeps the known cases away, and a panic from an
/// unknown one ends this connection instead of unwinding through the task.
fn handle_input(session: &mut ServerSession, input: &[u8]) -> Step<Vec<ServerSessionResult>> {
    match catch_unwind(AssertUnwindSafe(|| session.handle_input(input))) {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(err)) => {
            debug!(error = %err, "rtmp input rejected by the session");
            Err(Ending::abrupt(CloseReason::ProtocolError))
        }
        Err(_) => {
            warn!("rtmp session panicked on peer input; connection dropped");
            Err(Ending::abrupt(CloseReason::ProtocolError))
        }
    }
}

/// A token bucket of control results (responses and non-media events).
#[derive(Debug)]
struct ControlBudget {
    tokens: f64,
    last: Instant,
}

impl ControlBudget {
    fn new() -> ControlBudget {
        ControlBudget {
            tokens: CONTROL_BURST,
            last: Instant::now(),
        }
    }

    /// Takes one token; `false` if none is left.
    fn spend(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * CONTROL_PER_SECOND;
        self.tokens = (self.tokens + earned).min(CONTROL_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------
// Names and keys
// ---------------------------------------------------------------------------

/// The key in a publish name: everything before the first `?` (clients pass
/// options as a query there, `key?foo=bar`).
fn key_of(stream_name: &str) -> &str {
    stream_name
        .split_once('?')
        .map_or(stream_name, |(key, _)| key)
}

/// The application in a connect request, without a `?query` or trailing `/`.
fn app_of(app_name: &str) -> &str {
    let app = app_name.split_once('?').map_or(app_name, |(app, _)| app);
    app.trim_end_matches('/')
}

/// At most `chars` characters of peer-supplied text, for logs.
fn truncated(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(end, _)| &text[..end])
}

/// First 4 bytes of the key's SHA-256 in hex: enough to tell streams apart in
/// logs, nothing to recover the key from. Same prefix as the stored digest.
fn fingerprint(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Chunk guard
// ---------------------------------------------------------------------------

/// A way the peer's input breaks the protocol or a limit of this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Violation {
    #[error("chunk continues chunk stream {0}, which never started")]
    UnknownChunkStream(u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams")]
    TooManyChunkStreams,
    #[error("chunk of another message interleaved with an unfinished one")]
    Interleaved,
    #[error("extended timestamp delta below 2^24-1")]
    BadExtendedTimestamp,
    #[error("message of type {type_id} and {length} bytes is over the limit")]
    TooLarge { type_id: u8, length: usize },
    #[error("invalid chunk size {0}")]
    BadChunkSize(u32),
    #[error("AMF value nested deeper than {MAX_AMF_DEPTH}")]
    AmfTooDeep,
    #[error("AMF command or data message with too few values")]
    AmfTooShort,
}

/// Per chunk stream, what later chunk headers may leave out.
#[derive(Debug, Clone, Copy)]
struct ChunkStream {
    /// The 24-bit timestamp field last sent (0xFFFFFF: an extended timestamp follows).
    timestamp_field: u32,
    length: u32,
    type_id: u8,
}

/// The message whose chunks are arriving.
#[derive(Debug)]
struct Message {
    csid: u32,
    type_id: u8,
    length: usize,
    received: usize,
    /// Kept only for messages that are inspected when complete.
    body: Option<Vec<u8>>,
}

/// Follows the chunk framing exactly as `rml_rtmp`'s `ChunkDeserializer` does
/// (same header rules, same chunk-size handling, one message at a time), so that
/// every message's type and length are known before `rml_rtmp` sees them, and
/// refuses what `rml_rtmp` would mishandle:
///
/// - messages over the size limits (it reserves the declared length up front);
/// - AMF nested deeper than [`MAX_AMF_DEPTH`] (it recurses: stack overflow);
/// - AMF commands with fewer than three values and `@setDataFrame` data with
///   fewer than three (it indexes without checking: panic);
/// - chunks of different messages interleaved, or a continuation header that
///   changes the message's length or type (it keeps one partial message;
///   interleaving corrupts it and a shorter length underflows);
/// - an extended timestamp delta below `0xFFFFFF` (underflow) and a chunk size
///   of 0;
/// - more than [`MAX_CHUNK_STREAMS`] chunk streams (each is remembered).
///
/// Media bytes are only counted, never copied.
#[derive(Debug)]
struct ChunkGuard {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    /// The chunk header being read (at most 3 + 11 + 4 bytes).
    header: Vec<u8>,
    message: Option<Message>,
    /// Payload bytes of the current chunk still to come (0: reading a header).
    chunk_left: usize,
    /// Media messages may be large once the publisher was accepted.
    publishing: bool,
}

impl ChunkGuard {
    fn new() -> ChunkGuard {
        ChunkGuard {
            chunk_size: 128,
            streams: HashMap::new(),
            header: Vec::with_capacity(18),
            message: None,
            chunk_left: 0,
            publishing: false,
        }
    }

    /// Raises the size limit of media messages (call once publishing starts).
    fn publishing(&mut self) {
        self.publishing = true;
    }

    /// Follows `input`, the next bytes after the handshake.
    fn inspect(&mut self, mut input: &[u8]) -> Result<(), Violation> {
        loop {
            if self.chunk_left > 0 {
                if input.is_empty() {
                    return Ok(());
                }
                let take = self.chunk_left.min(input.len());
                let (data, rest) = input.split_at(take);
                input = rest;
                self.chunk_left -= take;
                if let Some(message) = self.message.as_mut() {
                    message.received += take;
                    if let Some(body) = message.body.as_mut() {
                        body.extend_from_slice(data);
                    }
                }
                if self.chunk_left == 0 {
                    self.end_chunk()?;
                }
                continue;
            }
            // A complete header is acted on even when no bytes follow, so that
            // a zero-length message is checked in the same call that
            // rml_rtmp parses it.
            let need = self.header_len()?;
            if self.header.len() == need {
                self.start_chunk()?;
                continue;
            }
            if input.is_empty() {
                return Ok(());
            }
            let take = (need - self.header.len()).min(input.len());
            let (part, rest) = input.split_at(take);
            self.header.extend_from_slice(part);
            input = rest;
        }
    }

    /// Length of the chunk header being read, as far as its bytes so far tell.
    fn header_len(&self) -> Result<usize, Violation> {
        let Some(&first) = self.header.first() else {
            return Ok(1);
        };
        let basic = match first & 0x3f {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        if self.header.len() < basic {
            return Ok(basic);
        }
        let format = first >> 6;
        let fields = [11, 7, 3, 0][usize::from(format)];
        if self.header.len() < basic + fields {
            return Ok(basic + fields);
        }
        let timestamp_field = if format == 3 {
            let csid = chunk_stream_id(&self.header);
            self.streams
                .get(&csid)
                .ok_or(Violation::UnknownChunkStream(csid))?
                .timestamp_field
        } else {
            u24(&self.header[basic..])
        };
        Ok(basic + fields + if timestamp_field >= 0xFF_FFFF { 4 } else { 0 })
    }

    /// Acts on a complete chunk header.
    fn start_chunk(&mut self) -> Result<(), Violation> {
        let header = std::mem::take(&mut self.header);
        let format = header[0] >> 6;
        let csid = chunk_stream_id(&header);
        let basic = match header[0] & 0x3f {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let fields = &header[basic..];
        if let Some(message) = &self.message
            && message.csid != csid
        {
            return Err(Violation::Interleaved);
        }
        let previous = self.streams.get(&csid).copied();
        let stream = match (format, previous) {
            (0 | 1, _) => ChunkStream {
                timestamp_field: u24(fields),
                length: u24(&fields[3..]),
                type_id: fields[6],
            },
            (2, Some(previous)) => ChunkStream {
                timestamp_field: u24(fields),
                ..previous
            },
            (_, Some(previous)) => previous,
            (_, None) => return Err(Violation::UnknownChunkStream(csid)),
        };
        // A continuation normally has a type 3 header; a fuller one (rml_rtmp's
        // own serializer sends type 0 when forced) must describe the same
        // message, or the partial message rml_rtmp keeps would be misread.
        if let Some(message) = &self.message
            && (stream.length as usize != message.length || stream.type_id != message.type_id)
        {
            return Err(Violation::Interleaved);
        }
        if stream.timestamp_field >= 0xFF_FFFF && format != 0 && self.message.is_none() {
            let extended_at = basic + [11, 7, 3, 0][usize::from(format)];
            let extended = header
                .get(extended_at..extended_at + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            if extended < 0xFF_FFFF {
                return Err(Violation::BadExtendedTimestamp);
            }
        }
        if previous.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(Violation::TooManyChunkStreams);
        }
        self.streams.insert(csid, stream);
        self.header = header;
        self.header.clear();

        let message = match self.message.as_mut() {
            Some(message) => message,
            None => {
                let length = stream.length as usize;
                if length > self.max_length(stream.type_id) {
                    return Err(Violation::TooLarge {
                        type_id: stream.type_id,
                        length,
                    });
                }
                let body = inspected(stream.type_id).then(|| Vec::with_capacity(length));
                self.message.insert(Message {
                    csid,
                    type_id: stream.type_id,
                    length,
                    received: 0,
                    body,
                })
            }
        };
        // rml_rtmp reads min(rest, chunk size) when the message is longer than
        // a chunk and the whole message otherwise.
        let rest = message.length - message.received;
        self.chunk_left = if message.length > self.chunk_size {
            rest.min(self.chunk_size)
        } else {
            rest
        };
        if self.chunk_left == 0 {
            self.end_chunk()?;
        }
        Ok(())
    }

    /// Bookkeeping at the end of a chunk's payload.
    fn end_chunk(&mut self) -> Result<(), Violation> {
        if let Some(message) = self.message.take_if(|m| m.received >= m.length) {
            self.complete(message)?;
        }
        Ok(())
    }

    fn max_length(&self, type_id: u8) -> usize {
        match type_id {
            1..=6 => MAX_CONTROL_MESSAGE,
            8 | 9 | AGGREGATE if self.publishing => MAX_MEDIA_MESSAGE,
            _ => MAX_SMALL_MESSAGE,
        }
    }

    /// Checks a complete message that `rml_rtmp` is about to parse.
    fn complete(&mut self, message: Message) -> Result<(), Violation> {
        let body = message.body.unwrap_or_default();
        match message.type_id {
            // Set chunk size: applies to the chunks after this message.
            1 => {
                if let Some(b) = body.get(..4) {
                    let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    if size == 0 || size > 0x7FFF_FFFF {
                        return Err(Violation::BadChunkSize(size));
                    }
                    self.chunk_size = size as usize;
                }
            }
            // AMF0 data (15 is "AMF3" data that rml_rtmp parses as AMF0).
            15 | 18 => match scan_amf(&body) {
                Amf::TooDeep => return Err(Violation::AmfTooDeep),
                Amf::Values {
                    count,
                    set_data_frame: true,
                } if count < 3 => return Err(Violation::AmfTooShort),
                _ => {}
            },
            // AMF0 commands (17 may carry a leading 0 that rml_rtmp skips).
            17 | 20 => {
                let amf = match (message.type_id, body.first()) {
                    (17, Some(0)) => &body[1..],
                    _ => &body[..],
                };
                match scan_amf(amf) {
                    Amf::TooDeep => return Err(Violation::AmfTooDeep),
                    Amf::Values { count, .. } if count < 3 => {
                        return Err(Violation::AmfTooShort);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether messages of this type are kept whole and checked on completion.
fn inspected(type_id: u8) -> bool {
    matches!(type_id, 1 | 15 | 17 | 18 | 20)
}

/// Chunk stream id of a basic header (which must be complete).
fn chunk_stream_id(header: &[u8]) -> u32 {
    match header[0] & 0x3f {
        0 => u32::from(header[1]) + 64,
        1 => u32::from(header[2]) * 256 + u32::from(header[1]) + 64,
        id => u32::from(id),
    }
}

/// Big-endian 24-bit number at the start of `bytes` (which has at least 3).
fn u24(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])
}

// ---------------------------------------------------------------------------
// AMF0 scan
// ---------------------------------------------------------------------------

/// What [`scan_amf`] found.
#[derive(Debug, PartialEq, Eq)]
enum Amf {
    /// Parsed (as far as `rml_rtmp` would): top-level values, and whether the
    /// first is the string `@setDataFrame`.
    Values { count: usize, set_data_frame: bool },
    /// Nested deeper than [`MAX_AMF_DEPTH`].
    TooDeep,
    /// `rml_rtmp` fails on this too (it reaches no deeper than we did).
    Malformed,
}

/// An open container in [`scan_amf`].
enum Nest {
    Object,
    Array { left: u32 },
}

/// One value as [`next_value`] sees it.
enum Value<'a> {
    /// End of input or the object-end marker: `rml_rtmp` reads "no value".
    End,
    Scalar,
    String(&'a [u8]),
    Open(Nest),
}

/// Walks AMF0 the way `rml_rtmp`'s recursive parser does, without recursion,
/// to learn the nesting depth and the number of top-level values. Where
/// `rml_rtmp` is lenient (short string bodies), so is this; it does not check
/// UTF-8, so it never stops earlier than `rml_rtmp`.
fn scan_amf(mut input: &[u8]) -> Amf {
    let mut stack: Vec<Nest> = Vec::new();
    let mut count = 0;
    let mut set_data_frame = false;
    loop {
        let value = match stack.last_mut() {
            None => match next_value(&mut input) {
                None => return Amf::Malformed,
                Some(Value::End) => {
                    return Amf::Values {
                        count,
                        set_data_frame,
                    };
                }
                Some(value) => {
                    if count == 0 {
                        set_data_frame = matches!(value, Value::String(s) if s == b"@setDataFrame");
                    }
                    count += 1;
                    value
                }
            },
            Some(Nest::Object) => {
                let Some(label) = take(&mut input, 2) else {
                    return Amf::Malformed;
                };
                let label = usize::from(u16::from_be_bytes([label[0], label[1]]));
                if label == 0 {
                    if take(&mut input, 1) != Some(&[0x09]) {
                        return Amf::Malformed;
                    }
                    stack.pop();
                    continue;
                }
                take_lenient(&mut input, label);
                match next_value(&mut input) {
                    None | Some(Value::End) => return Amf::Malformed,
                    Some(value) => value,
                }
            }
            Some(Nest::Array { left }) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                match next_value(&mut input) {
                    None => return Amf::Malformed,
                    Some(Value::End) => {
                        stack.pop();
                        continue;
                    }
                    Some(value) => value,
                }
            }
        };
        if let Value::Open(nest) = value {
            if stack.len() >= MAX_AMF_DEPTH {
                return Amf::TooDeep;
            }
            stack.push(nest);
        }
    }
}

/// Reads one value's marker and fixed part; `None` where `rml_rtmp` errors.
fn next_value<'a>(input: &mut &'a [u8]) -> Option<Value<'a>> {
    let Some((&marker, rest)) = input.split_first() else {
        return Some(Value::End);
    };
    *input = rest;
    Some(match marker {
        0x00 => take(input, 8).map(|_| Value::Scalar)?,
        0x01 => take(input, 1).map(|_| Value::Scalar)?,
        0x02 => {
            let length = take(input, 2)?;
            let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
            Value::String(take_lenient(input, length))
        }
        0x03 => Value::Open(Nest::Object),
        0x05 | 0x06 => Value::Scalar,
        0x08 => take(input, 4).map(|_| Value::Open(Nest::Object))?,
        0x09 => Value::End,
        0x0A => {
            let count = take(input, 4)?;
            Value::Open(Nest::Array {
                left: u32::from_be_bytes([count[0], count[1], count[2], count[3]]),
            })
        }
        _ => return None,
    })
}

/// Exactly `n` bytes, or `None` (a short fixed-size read fails in `rml_rtmp`).
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

/// Up to `n` bytes (a string body read is allowed to come up short).
fn take_lenient<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = input.split_at(n.min(input.len()));
    *input = rest;
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::{MessagePayload, RtmpMessage};
    use rml_rtmp::rml_amf0::{self, Amf0Value};
    use rml_rtmp::time::RtmpTimestamp;

    #[test]
    fn the_key_is_the_stream_name_without_its_query() {
        assert_eq!(key_of("abc"), "abc");
        assert_eq!(key_of("abc?foo=bar"), "abc");
        assert_eq!(key_of("abc?foo=bar?baz"), "abc");
        assert_eq!(key_of("?foo"), "");
        assert_eq!(key_of(""), "");
    }

    #[test]
    fn the_app_ignores_a_query_and_trailing_slashes() {
        assert_eq!(app_of("live"), "live");
        assert_eq!(app_of("live/"), "live");
        assert_eq!(app_of("live?token=1"), "live");
        assert_eq!(app_of("live/?token=1"), "live");
        assert_ne!(app_of("live2"), "live");
        assert_ne!(app_of("LIVE"), "live");
    }

    #[test]
    fn fingerprints_are_short_stable_and_not_the_key() {
        let key = "q0Vb2HqH4dB0wm2R3wN1g6yQ9kSxZ1aA";
        let fp = fingerprint(key);
        assert_eq!(fp.len(), 8);
        assert_eq!(fp, fingerprint(key));
        assert_ne!(fp, fingerprint("another-key"));
        assert!(!key.contains(&fp));
        let full: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(full.starts_with(&fp), "same prefix as the stored digest");
    }

    #[test]
    fn the_control_budget_allows_bursts_and_refills() {
        let start = Instant::now();
        let mut budget = ControlBudget {
            tokens: CONTROL_BURST,
            last: start,
        };
        for _ in 0..CONTROL_BURST as usize {
            assert!(budget.spend(start));
        }
        assert!(!budget.spend(start), "the burst is used up");
        assert!(
            budget.spend(start + Duration::from_secs(1)),
            "tokens come back"
        );
    }

    // --- chunk guard -------------------------------------------------------

    fn amf(values: &[Amf0Value]) -> Vec<u8> {
        rml_amf0::serialize(&values.to_vec()).expect("serializable")
    }

    fn payload(type_id: u8, timestamp: u32, stream: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(timestamp),
            message_stream_id: stream,
            type_id,
            data: Bytes::from(data),
        }
    }

    /// Chunks of one message as a client would send them.
    fn chunks(serializer: &mut ChunkSerializer, message: &MessagePayload) -> Vec<u8> {
        serializer
            .serialize(message, false, false)
            .expect("serializable")
            .bytes
    }

    /// Deterministic pseudo-random numbers (xorshift), no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn the_guard_follows_real_client_framing_in_any_split() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..16 {
            let mut serializer = ChunkSerializer::new();
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            let connect = payload(
                20,
                0,
                0,
                amf(&[
                    Amf0Value::Utf8String("connect".into()),
                    Amf0Value::Number(1.0),
                    Amf0Value::Object(
                        [("app".to_string(), Amf0Value::Utf8String("live".into()))].into(),
                    ),
                ]),
            );
            wire.extend(chunks(&mut serializer, &connect));
            expected.push(connect);
            let mut timestamp = if round % 2 == 0 { 0 } else { 0xFF_FF00 };
            for i in 0..200 {
                if i % 50 == 10 {
                    let size = [1, 60, 128, 4096, 60_000][rng.below(5) as usize];
                    let packet = serializer
                        .set_max_chunk_size(size, RtmpTimestamp::new(timestamp))
                        .expect("chunk size");
                    wire.extend(packet.bytes);
                    expected.push(payload(1, timestamp, 0, size.to_be_bytes().to_vec()));
                }
                timestamp = timestamp.wrapping_add(rng.below(70) as u32);
                if rng.below(40) == 0 {
                    timestamp = timestamp.wrapping_add(0x100_0000);
                }
                // (rml_rtmp's serializer writes nothing for an empty message.)
                let (type_id, length) = match rng.below(3) {
                    0 => (8, 1 + rng.below(600) as usize),
                    _ => (9, 1 + rng.below(30_000) as usize),
                };
                let data = (0..length).map(|_| rng.next() as u8).collect();
                let message = payload(type_id, timestamp, 1, data);
                wire.extend(chunks(&mut serializer, &message));
                expected.push(message);
            }

            let mut guard = ChunkGuard::new();
            guard.publishing();
            let mut deserializer = ChunkDeserializer::new();
            let mut seen = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(3000) as usize).min(rest.len());
                let (part, tail) = rest.split_at(n);
                rest = tail;
                guard
                    .inspect(part)
                    .unwrap_or_else(|v| panic!("round {round}: {v}"));
                let mut input = part;
                while let Some(message) = deserializer.get_next_message(input).expect("valid") {
                    input = &[];
                    if message.type_id == 1
                        && let Ok(RtmpMessage::SetChunkSize { size }) = message.to_rtmp_message()
                    {
                        deserializer
                            .set_max_chunk_size(size as usize)
                            .expect("size");
                    }
                    seen.push(message);
                }
            }
            assert_eq!(seen.len(), expected.len(), "round {round}");
            for (got, want) in seen.iter().zip(&expected) {
                assert_eq!(got.type_id, want.type_id);
                assert_eq!(got.data, want.data);
            }
            assert!(guard.message.is_none() && guard.header.is_empty());
            assert_eq!(guard.chunk_size, deserializer.get_max_chunk_size());
        }
    }

    /// One complete type-0 chunk carrying all of `data` (chunk size permitting).
    fn raw_message(csid: u8, type_id: u8, data: &[u8]) -> Vec<u8> {
        let length = data.len() as u32;
        let mut bytes = vec![csid & 0x3f, 0, 0, 0];
        bytes.extend_from_slice(&length.to_be_bytes()[1..]);
        bytes.push(type_id);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut data = amf(&[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
        ]);
        for _ in 0..depth {
            data.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
        }
        data.push(0x05);
        data
    }

    #[test]
    fn the_guard_refuses_amf_that_would_crash_rml_rtmp() {
        // A deeply nested command would overflow the stack in rml_amf0.
        let mut guard = ChunkGuard::new();
        guard.chunk_size = 1 << 20;
        let deep = raw_message(3, 20, &nested_arrays(10_000));
        assert_eq!(guard.inspect(&deep), Err(Violation::AmfTooDeep));

        // Ordinary nesting is fine.
        let mut guard = ChunkGuard::new();
        guard.chunk_size = 1 << 20;
        let shallow = raw_message(3, 20, &nested_arrays(3));
        assert_eq!(guard.inspect(&shallow), Ok(()));

        // Commands with fewer than three values panic in rml_rtmp.
        for values in [
            vec![],
            vec![Amf0Value::Utf8String("connect".into())],
            vec![
                Amf0Value::Utf8String("connect".into()),
                Amf0Value::Number(1.0),
            ],
        ] {
            let mut guard = ChunkGuard::new();
            let short = raw_message(3, 20, &amf(&values));
            assert_eq!(guard.inspect(&short), Err(Violation::AmfTooShort));
        }

        // So does a @setDataFrame without its metadata.
        let mut guard = ChunkGuard::new();
        let data = amf(&[
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
        ]);
        assert_eq!(
            guard.inspect(&raw_message(4, 18, &data)),
            Err(Violation::AmfTooShort)
        );
        let mut guard = ChunkGuard::new();
        let data = amf(&[
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
            Amf0Value::Object([("width".to_string(), Amf0Value::Number(640.0))].into()),
        ]);
        assert_eq!(guard.inspect(&raw_message(4, 18, &data)), Ok(()));
    }

    #[test]
    fn the_guard_limits_sizes_streams_and_interleaving() {
        // Before publishing nothing large is accepted; afterwards media may be.
        let header_only = |length: u32, type_id: u8| {
            let mut bytes = vec![4, 0, 0, 0];
            bytes.extend_from_slice(&length.to_be_bytes()[1..]);
            bytes.push(type_id);
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes
        };
        let mut guard = ChunkGuard::new();
        assert!(matches!(
            guard.inspect(&header_only(1 << 20, 9)),
            Err(Violation::TooLarge { .. })
        ));
        let mut guard = ChunkGuard::new();
        guard.publishing();
        assert_eq!(guard.inspect(&header_only(1 << 20, 9)), Ok(()));
        let mut guard = ChunkGuard::new();
        guard.publishing();
        assert!(matches!(
            guard.inspect(&header_only(8 << 20, 9)),
            Err(Violation::TooLarge { .. })
        ));
        let mut guard = ChunkGuard::new();
        guard.publishing();
        assert!(matches!(
            guard.inspect(&header_only(1 << 20, 20)),
            Err(Violation::TooLarge { .. })
        ));

        // A chunk of another message while one is unfinished.
        let mut guard = ChunkGuard::new();
        guard.publishing();
        let mut bytes = header_only(300, 9);
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend(raw_message(5, 8, &[0xAF, 1, 2]));
        assert_eq!(guard.inspect(&bytes), Err(Violation::Interleaved));

        // Type 1-3 headers need an earlier type 0 on their chunk stream.
        let mut guard = ChunkGuard::new();
        assert_eq!(
            guard.inspect(&[0xC7]),
            Err(Violation::UnknownChunkStream(7))
        );

        // Chunk streams are bounded.
        let mut guard = ChunkGuard::new();
        let mut bytes = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            let mut message = raw_message(0, 8, &[0xAF, 1]);
            message.insert(1, i); // 2-byte basic header: csid 64 + i
            bytes.extend(message);
        }
        assert_eq!(guard.inspect(&bytes), Err(Violation::TooManyChunkStreams));

        // A chunk size of zero.
        let mut guard = ChunkGuard::new();
        assert_eq!(
            guard.inspect(&raw_message(2, 1, &0u32.to_be_bytes())),
            Err(Violation::BadChunkSize(0))
        );
    }

    #[test]
    fn the_amf_scan_matches_rml_amf0_on_what_it_accepts() {
        let samples = [
            amf(&[
                Amf0Value::Utf8String("publish".into()),
                Amf0Value::Number(5.0),
                Amf0Value::Null,
                Amf0Value::Utf8String("key".into()),
                Amf0Value::Utf8String("live".into()),
            ]),
            amf(&[
                Amf0Value::Utf8String("@setDataFrame".into()),
                Amf0Value::Utf8String("onMetaData".into()),
                Amf0Value::Object(
                    [
                        ("a".to_string(), Amf0Value::Boolean(true)),
                        (
                            "b".to_string(),
                            Amf0Value::StrictArray(vec![Amf0Value::Undefined, Amf0Value::Null]),
                        ),
                    ]
                    .into(),
                ),
            ]),
        ];
        for sample in samples {
            let parsed = rml_amf0::deserialize(&mut std::io::Cursor::new(&sample)).expect("valid");
            let Amf::Values { count, .. } = scan_amf(&sample) else {
                panic!("scan failed");
            };
            assert_eq!(count, parsed.len());
        }
        assert!(matches!(
            scan_amf(&amf(&[Amf0Value::Utf8String("@setDataFrame".into())])),
            Amf::Values {
                count: 1,
                set_data_frame: true
            }
        ));
        assert_eq!(scan_amf(&[0x0B]), Amf::Malformed);
    }

    #[test]
    fn a_panic_inside_rml_rtmp_ends_only_the_connection() {
        // This input panics inside rml_rtmp (a command with one value; the
        // panic message shows in the test output). The guard refuses it first;
        // if it did not, the session call is caught.
        let (mut session, _) = ServerSession::new(ServerSessionConfig::new()).expect("session");
        let input = raw_message(3, 20, &amf(&[Amf0Value::Utf8String("connect".into())]));
        let result = handle_input(&mut session, &input);
        assert!(matches!(
            result,
            Err(Ending {
                reason: CloseReason::ProtocolError,
                ..
            })
        ));
    }
}
