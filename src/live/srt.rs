//! SRT ingest front end: creators publish MPEG-TS (H.264 + AAC) as SRT
//! callers to one UDP port, `srt://HOST:PORT?streamid=<key>` (or the access
//! control form `streamid=#!::r=<key>,m=publish`). Like [`super::rtmp`], this
//! module owns the socket and the protocol; who may publish, and what happens
//! to the media, is decided behind [`SrtGate`] and [`AccessUnitSink`]. The
//! transport stream is demuxed here ([`super::tsdemux`]) into the access
//! units the segmenter takes, so SRT and RTMP share everything downstream.
//!
//! The SRT protocol itself is `srt-protocol` (the sans-IO core of
//! `srt-tokio`): its handshake state machine (`Listen`) and its connection
//! (`DuplexConnection`: ARQ, TSBPD, ACK/NAK, keep-alives). `srt-tokio`'s own
//! multiplexing listener is not used, because on a public port it
//!
//! - dies, for every stream on the port, on one handshake from a caller with
//!   a passphrase (`unimplemented!("expected no secrets")` in the listener
//!   task; ffmpeg with `passphrase=` is enough), on a handshake with a
//!   congestion, filter or group extension, and on other peer input that
//!   reaches a `todo!()`/`unimplemented!()`;
//! - keeps a session for every source address that ever sent a parseable
//!   packet (and for closed connections until that address sends again),
//!   with no expiry or bound;
//! - stalls every connection when one connection's queue is full, or while
//!   the application has not yet taken a handshake from its queue;
//! - enables tokio's `test-util` feature.
//!
//! Instead one task owns the UDP socket and demultiplexes by source address:
//!
//! - **Handshakes.** Induction is answered statelessly with a keyed cookie
//!   (SipHash of the address and a 10 s window under a per-server random
//!   key; `srt-protocol`'s own cookie is an unkeyed hash). Only a conclusion
//!   echoing a valid cookie, i.e. from an address that receives our packets,
//!   creates state, and that state is capped overall and per address. A
//!   handshake is decided in this order: unsupported extensions or
//!   encryption (dropped / refused), stream id (`m=publish` only), wrong-key
//!   penalty ([`Throttle`]: refused before the gate), capacity, then the gate
//!   (in its own task, with a deadline shorter than the caller's 3 s connect
//!   timeout). Refusals are SRT rejections the caller reports as errors;
//!   each is remembered for a few seconds and repeated to retransmitted
//!   conclusions instead of asking the gate again.
//! - **Connections.** Each accepted caller gets a task that drives its
//!   `DuplexConnection` and demuxes its media inline; packets reach it
//!   through a bounded queue that drops when full (SRT retransmits), so no
//!   caller can stall another. Memory per caller is bounded by the SRT
//!   receive buffer ([`SrtSettings::receive_buffer_packets`]), the queue and
//!   the demuxer's PES limits.
//! - **Endings.** A caller that closes, stops sending media for the sink's
//!   idle timeout, goes silent at the SRT level (`peer_idle_timeout`), breaks
//!   the protocol, sends an unsupported video codec, is kicked, or meets
//!   shutdown: its sink is closed exactly once, with the reason, and the
//!   caller is sent an SRT shutdown.
//! - **Containment.** `srt-protocol`'s parser panics on handshake
//!   extensions it does not know and misreads (then panics on) extensions of
//!   unexpected length or repeated ones, so handshake datagrams are checked
//!   first and such ones dropped; control packets it would `todo!()` on are
//!   not passed to a connection. Beyond that, every call into `srt-protocol`
//!   with peer data runs under `catch_unwind`: a panic drops that packet
//!   (before a connection exists) or that connection, never the listener.
//!
//! Not supported: encryption (passphrases), rendezvous, caller mode, packet
//! filters (FEC), bonding groups, and the file congestion mode.
//!
//! Stream keys are secrets: spans carry the peer address and, once a stream
//! id is parsed, the first 4 bytes of the key's SHA-256 in hex. The stream id
//! itself is never logged. `srt-protocol` logs through the `log` crate:
//! debug records print whole packets (a handshake carries the stream id) and
//! its parser warns on odd handshakes from anyone, so production filters
//! should keep `srt_protocol` at `error` (its info records, two per
//! connection end, are harmless).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Cursor};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use srt_protocol::connection::DuplexConnection;
use srt_protocol::options::PacketCount;
use srt_protocol::packet::{
    ControlPacket, ControlTypes, CoreRejectReason, HandshakeControlInfo, HandshakeVsInfo, HsV5Info,
    Packet, RejectReason, ServerRejectReason, ShakeType, SocketId, SrtControlPacket, TimeStamp,
};
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::protocol::pending_connection::{AccessControlResponse, ConnectionResult};
use srt_protocol::settings::ConnInitSettings;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use super::segmenter::{AudioFrame, VideoFrame};
use super::throttle::Throttle;
use super::tsdemux::{Frame, TsDemuxer};

// ---------------------------------------------------------------------------
// Public interface
// ---------------------------------------------------------------------------

/// Decides who may publish. Implemented by the live service.
#[async_trait::async_trait]
pub trait SrtGate: Send + Sync + 'static {
    /// `key` is already extracted from the stream id (it may be empty or
    /// junk: it comes straight from the network). `Ok` hands back the sink for
    /// this publisher's access units; the stream counts as live from then on
    /// until [`AccessUnitSink::close`].
    ///
    /// Cancel-safe: the future is dropped at the deadline
    /// ([`SrtSettings::gate_timeout`]) or on shutdown.
    async fn publish(
        &self,
        key: &str,
        peer: SocketAddr,
    ) -> Result<Box<dyn AccessUnitSink>, SrtRefusal>;
}

/// Why the gate refused a publisher. Each is sent as an SRT rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtRefusal {
    /// No stream has this key. Counts as a wrong key for the throttle.
    UnknownKey,
    /// The stream already has a publisher, which is left alone.
    AlreadyLive,
    /// The gate could not decide (store or database down).
    Unavailable,
}

impl SrtRefusal {
    /// Metric label (as [`super::rtmp::Refusal::as_str`]).
    pub fn as_str(self) -> &'static str {
        match self {
            SrtRefusal::UnknownKey => "unknown_key",
            SrtRefusal::AlreadyLive => "already_live",
            SrtRefusal::Unavailable => "unavailable",
        }
    }

    /// SRT rejection code sent to the caller (libsrt's `SRT_REJX_*`: the
    /// caller sees 1401, 1409 or 1503 via `srt_getrejectreason`).
    fn reject_reason(self) -> RejectReason {
        RejectReason::Server(match self {
            SrtRefusal::UnknownKey => ServerRejectReason::Unauthorized,
            SrtRefusal::AlreadyLive => ServerRejectReason::Conflict,
            SrtRefusal::Unavailable => ServerRejectReason::Down,
        })
    }
}

/// Receives the access units of one publisher.
///
/// Called from the connection's task: every method must return quickly and
/// never block. Timestamps are 90 kHz on the publisher's (unwrapped) clock.
pub trait AccessUnitSink: Send {
    /// Codec strings (`avc1.PPCCLL`, `mp4a.40.<aot>`) and picture size, when
    /// first known and whenever they change (before the frames they apply to).
    fn codecs(&mut self, video: Option<String>, audio: Option<String>, size: Option<(u32, u32)>);
    /// One H.264 access unit (Annex B, AUD first, SPS/PPS before keyframes).
    fn video(&mut self, frame: VideoFrame);
    /// One ADTS AAC frame.
    fn audio(&mut self, frame: AudioFrame);
    /// How long this publisher may send no media (no access unit comes out
    /// of its transport stream, whatever else it sends) before it is
    /// dropped; this includes the time to its first one. Asked once, when
    /// publishing starts.
    fn idle_timeout(&self) -> Duration;
    /// The publisher is gone. Called exactly once per sink, whatever the
    /// cause, including a panic or the connection task being dropped.
    /// `reason` is one of `unpublished` (the caller closed the connection),
    /// `disconnected` (it went silent at the SRT level), `idle_timeout`,
    /// `bad_media` (unsupported codec), `protocol_error`, `kicked`,
    /// `shutdown` and `aborted`.
    fn close(self: Box<Self>, reason: &'static str);
    /// Cancelled by the service to kick this publisher. Asked for once,
    /// right after the gate returned the sink.
    fn kicked(&self) -> CancellationToken;
}

/// Limits and tuning of the SRT server.
#[derive(Debug, Clone)]
pub struct SrtSettings {
    /// SRT receiver latency (TSBPD): how long received data is held for
    /// retransmissions before it is handed on. The larger of this and the
    /// caller's latency applies. Ingest latency hardly matters next to HLS
    /// segment durations, while loss recovery needs about 4 × RTT, so the
    /// default is a generous 1 s (libsrt's default is 120 ms).
    pub latency: Duration,
    /// Callers publishing or waiting for the gate at once; beyond that new
    /// ones are refused (SRT overload rejection).
    pub max_connections: usize,
    /// Handshakes waiting for the gate at once (anyone can start one).
    pub max_pending: usize,
    /// Of `max_pending`, how many one address may hold.
    pub max_pending_per_ip: usize,
    /// How long the gate may take; the caller's own connect timeout is 3 s
    /// by default, so this stays below it.
    pub gate_timeout: Duration,
    /// A caller from which no packet at all arrives for this long is
    /// disconnected (SRT's `SRTO_PEERIDLETIMEO`). Callers send keep-alives
    /// even without media, so this catches dead peers; the sink's idle
    /// timeout catches callers that send no media.
    pub peer_idle_timeout: Duration,
    /// SRT receive buffer per caller, in packets of up to 1456 bytes (the
    /// caller's flow window). Must hold latency × bitrate: 4096 packets is
    /// about 5 MiB, enough for ~40 Mbit/s at 1 s latency.
    pub receive_buffer_packets: u64,
    /// Packets queued from the socket task to one connection task; more
    /// are dropped (and retransmitted by SRT).
    pub connection_queue: usize,
    /// `SO_RCVBUF` requested for the UDP socket (capped by the kernel's
    /// `net.core.rmem_max`).
    pub udp_receive_buffer: usize,
}

impl Default for SrtSettings {
    fn default() -> Self {
        SrtSettings {
            latency: Duration::from_millis(1000),
            max_connections: 256,
            max_pending: 64,
            // Many creators may start at once behind one NAT or balancer;
            // an SRT handshake holds its slot only for a few round trips.
            max_pending_per_ip: 16,
            gate_timeout: Duration::from_millis(2500),
            peer_idle_timeout: Duration::from_secs(5),
            receive_buffer_packets: 4096,
            connection_queue: 512,
            udp_receive_buffer: 8 * 1024 * 1024,
        }
    }
}

/// A bound SRT listener socket, not serving yet.
#[derive(Debug)]
pub struct SrtServer {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
}

impl SrtServer {
    /// Binds the UDP socket (port 0 picks a free port; see
    /// [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr) -> io::Result<SrtServer> {
        let socket = UdpSocket::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        Ok(SrtServer {
            socket: Arc::new(socket),
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves SRT callers until `shutdown` is cancelled, then closes every
    /// connection (their sinks get `shutdown`) and returns once all tasks
    /// have ended.
    pub async fn run(
        self,
        gate: Arc<dyn SrtGate>,
        throttle: Arc<Mutex<Throttle>>,
        settings: SrtSettings,
        shutdown: CancellationToken,
    ) {
        if let Err(err) =
            socket2::SockRef::from(&*self.socket).set_recv_buffer_size(settings.udp_receive_buffer)
        {
            warn!(error = %err, "srt: could not enlarge the UDP receive buffer");
        }
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let tracker = TaskTracker::new();
        let mut listener = Listener::new(
            self.socket.clone(),
            self.local_addr,
            Arc::new(Shared {
                gate,
                throttle,
                settings,
                shutdown: shutdown.clone(),
            }),
            events_tx,
            tracker.clone(),
        );
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(event) = events_rx.recv() => listener.event(event).await,
                _ = sweep.tick() => listener.sweep(),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => listener.datagram(&buf[..len], from).await,
                    Err(err) => {
                        debug!(error = %err, "srt socket receive failed");
                        tokio::time::sleep(RECEIVE_BACKOFF).await;
                    }
                },
            }
        }
        // Connection tasks see their queues close (and the shutdown token);
        // sinks of decisions still in flight are closed where they are dropped.
        drop(listener);
        drop(events_rx);
        tracker.close();
        tracker.wait().await;
    }
}

/// Binds `addr` and serves until `shutdown`; see [`SrtServer`] to learn the
/// bound port first.
pub async fn serve(
    addr: SocketAddr,
    gate: Arc<dyn SrtGate>,
    throttle: Arc<Mutex<Throttle>>,
    settings: SrtSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    SrtServer::bind(addr)
        .await?
        .run(gate, throttle, settings, shutdown)
        .await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Limits that are not settings
// ---------------------------------------------------------------------------

/// Receive buffer for one datagram (SRT packets are at most 1500 bytes
/// including IP and UDP headers).
const MAX_DATAGRAM: usize = 2048;
/// Cookie validity window; a cookie of the current or previous window is
/// accepted, so 10-20 s between induction and conclusion.
const COOKIE_WINDOW: Duration = Duration::from_secs(10);
/// How long a refusal is repeated to retransmitted conclusions.
const REJECTION_MEMORY: Duration = Duration::from_secs(5);
/// Refusals remembered at most.
const MAX_REJECTIONS: usize = 4096;
/// How often expired state is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often addresses that stopped presenting wrong keys are forgotten.
const FORGET_STALE_EVERY: Duration = Duration::from_secs(60);
/// Pause after a failed receive.
const RECEIVE_BACKOFF: Duration = Duration::from_millis(10);
/// Packets a connection task takes from its queue per wake-up before it
/// looks at its timers again.
const PACKET_BATCH: usize = 64;
/// Size of an SRT header plus a handshake body, where extensions start.
const HANDSHAKE_BODY: usize = 16 + 48;
/// Handshake extension types: HSREQ/HSRSP (3 words), KMREQ/KMRSP and the
/// stream id (at most 512 bytes).
const EXT_HSREQ: u16 = 1;
const EXT_HSRSP: u16 = 2;
const EXT_KMREQ: u16 = 3;
const EXT_KMRSP: u16 = 4;
const EXT_SID: u16 = 5;
/// The `KMREQ` bit of the handshake's extension flags.
const EXT_FLAG_KM: u8 = 0x02;

// ---------------------------------------------------------------------------
// The socket task
// ---------------------------------------------------------------------------

struct Shared {
    gate: Arc<dyn SrtGate>,
    throttle: Arc<Mutex<Throttle>>,
    settings: SrtSettings,
    shutdown: CancellationToken,
}

enum Event {
    /// The gate answered for the handshake `id` from `addr`.
    Decision {
        addr: SocketAddr,
        id: u64,
        outcome: Result<Publication, SrtRefusal>,
    },
    /// The connection `id` from `addr` ended.
    Ended { addr: SocketAddr, id: u64 },
}

/// A handshake waiting for the gate.
struct Pending {
    id: u64,
    listen: Listen,
    remote_socket: SocketId,
    /// Of the key, for the connection's span.
    fingerprint: String,
    since: Instant,
}

/// An accepted caller.
struct Live {
    id: u64,
    queue: mpsc::Sender<Packet>,
    remote_socket: SocketId,
    /// Our conclusion, repeated if the caller did not get it.
    reply: Option<Packet>,
}

/// A refused caller, answered the same way for a while.
struct Rejection {
    reply: Packet,
    until: Instant,
}

struct Listener {
    socket: Arc<UdpSocket>,
    is_ipv6: bool,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    tracker: TaskTracker,
    /// Settings of new connections (each gets its own socket id).
    base: ConnInitSettings,
    /// Key of the handshake cookies.
    secret: RandomState,
    started: Instant,
    pending: HashMap<SocketAddr, Pending>,
    pending_per_ip: HashMap<IpAddr, usize>,
    live: HashMap<SocketAddr, Live>,
    rejections: HashMap<SocketAddr, Rejection>,
    next_id: u64,
    last_forget: Instant,
    send_buf: BytesMut,
}

impl Listener {
    fn new(
        socket: Arc<UdpSocket>,
        local_addr: SocketAddr,
        shared: Arc<Shared>,
        events: mpsc::UnboundedSender<Event>,
        tracker: TaskTracker,
    ) -> Listener {
        let s = &shared.settings;
        let base = ConnInitSettings {
            send_latency: s.latency,
            recv_latency: s.latency,
            peer_idle_timeout: s.peer_idle_timeout,
            recv_buffer_size: PacketCount(s.receive_buffer_packets.max(64)),
            ..ConnInitSettings::default()
        };
        Listener {
            socket,
            is_ipv6: local_addr.is_ipv6(),
            shared,
            events,
            tracker,
            base,
            secret: RandomState::new(),
            started: Instant::now(),
            pending: HashMap::new(),
            pending_per_ip: HashMap::new(),
            live: HashMap::new(),
            rejections: HashMap::new(),
            next_id: 0,
            last_forget: Instant::now(),
            send_buf: BytesMut::with_capacity(MAX_DATAGRAM),
        }
    }

    async fn datagram(&mut self, data: &[u8], from: SocketAddr) {
        let handshake_bytes = is_handshake(data);
        let (data, key_material) = if handshake_bytes {
            match sanitize_handshake(data) {
                Some(sanitized) => sanitized,
                None => {
                    debug!(peer = %from, "srt handshake with unsupported or malformed extensions ignored");
                    return;
                }
            }
        } else {
            (Cow::Borrowed(data), false)
        };
        if let Some(live) = self.live.get(&from) {
            let Some(packet) = parse(&data, self.is_ipv6) else {
                return;
            };
            if let Some(conclusion) = handshake(&packet, ShakeType::Conclusion)
                && conclusion.socket_id == live.remote_socket
            {
                // The caller missed our conclusion (it is not answered by
                // the connection, which only takes packets sent to its id).
                if let Some(reply) = live.reply.clone() {
                    self.send(reply, from).await;
                }
                return;
            }
            match live.queue.try_send(packet) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.live.remove(&from);
                }
            }
            return;
        }
        if !handshake_bytes {
            return; // data for a connection that is gone, or noise
        }
        let Some(packet) = parse(&data, self.is_ipv6) else {
            return;
        };
        let Packet::Control(ControlPacket {
            timestamp,
            dest_sockid,
            control_type: ControlTypes::Handshake(shake),
        }) = packet
        else {
            return;
        };
        match shake.shake_type {
            ShakeType::Induction => self.induction(from, timestamp, dest_sockid, shake).await,
            ShakeType::Conclusion => {
                self.conclusion(from, timestamp, dest_sockid, shake, key_material)
                    .await;
            }
            _ => {}
        }
    }

    /// Answers an induction without keeping anything: the reply carries a
    /// cookie only we can make for this address.
    async fn induction(
        &mut self,
        from: SocketAddr,
        timestamp: TimeStamp,
        dest_sockid: SocketId,
        shake: HandshakeControlInfo,
    ) {
        let mut listen = Listen::new(self.base.clone(), true);
        let packet = control(timestamp, dest_sockid, shake);
        let result = guarded("induction", || {
            listen.handle_packet(Instant::now(), Ok((packet, from)))
        });
        let Some(ConnectionResult::SendPacket((mut reply, to))) = result else {
            return;
        };
        if let Packet::Control(ControlPacket {
            control_type: ControlTypes::Handshake(info),
            ..
        }) = &mut reply
        {
            info.syn_cookie = self.cookie(from, self.window());
        }
        self.send(reply, to).await;
    }

    /// A conclusion: the caller's request, with its stream id.
    async fn conclusion(
        &mut self,
        from: SocketAddr,
        timestamp: TimeStamp,
        dest_sockid: SocketId,
        shake: HandshakeControlInfo,
        key_material: bool,
    ) {
        if let Some(rejection) = self.rejections.get(&from)
            && rejection.until > Instant::now()
        {
            let reply = rejection.reply.clone();
            self.send(reply, from).await;
            return;
        }
        if self.pending.contains_key(&from) {
            return; // still waiting for the gate; the caller retries
        }
        let window = self.window();
        if shake.syn_cookie != self.cookie(from, window)
            && shake.syn_cookie != self.cookie(from, window.wrapping_sub(1))
        {
            debug!(peer = %from, "srt conclusion with an invalid cookie ignored");
            return;
        }
        let HandshakeVsInfo::V5(HsV5Info {
            key_size,
            ext_km,
            sid,
            ..
        }) = &shake.info
        else {
            return; // HSv4: libsrt callers since 1.3 use v5
        };
        let encrypted = key_material || ext_km.is_some() || *key_size != Default::default();
        let stream_id = sid.clone();
        let remote_socket = shake.socket_id;
        let Some(mut listen) = self.request(from, timestamp, dest_sockid, shake).await else {
            return;
        };

        let span = tracing::info_span!("srt", peer = %from, key = tracing::field::Empty);
        let key = match span.in_scope(|| self.admit(from, encrypted, stream_id.as_deref(), &span)) {
            Ok(key) => key,
            Err(reason) => {
                self.refuse(&mut listen, from, reason)
                    .instrument(span)
                    .await;
                return;
            }
        };

        let id = self.next_id;
        self.next_id += 1;
        *self.pending_per_ip.entry(from.ip()).or_insert(0) += 1;
        self.pending.insert(
            from,
            Pending {
                id,
                listen,
                remote_socket,
                fingerprint: fingerprint(&key),
                since: Instant::now(),
            },
        );
        let (gate, shutdown) = (self.shared.gate.clone(), self.shared.shutdown.clone());
        let timeout = self.shared.settings.gate_timeout;
        let events = self.events.clone();
        self.tracker.spawn(
            async move {
                let outcome = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    decision = tokio::time::timeout(timeout, gate.publish(&key, from)) => {
                        match decision {
                            Ok(Ok(sink)) => Ok(Publication::new(sink)),
                            Ok(Err(refusal)) => Err(refusal),
                            Err(_) => {
                                warn!("srt publish gate did not answer in time");
                                Err(SrtRefusal::Unavailable)
                            }
                        }
                    }
                };
                if let Err(mpsc::error::SendError(Event::Decision {
                    outcome: Ok(publication),
                    ..
                })) = events.send(Event::Decision {
                    addr: from,
                    id,
                    outcome,
                }) {
                    publication.close("shutdown");
                }
            }
            .instrument(span),
        );
    }

    /// Everything decided without the gate: encryption, stream id, the
    /// wrong-key penalty and capacity. Returns the key to ask the gate about.
    fn admit(
        &self,
        from: SocketAddr,
        encrypted: bool,
        stream_id: Option<&str>,
        span: &tracing::Span,
    ) -> Result<String, RejectReason> {
        if encrypted {
            info!("srt caller refused: encryption is not supported");
            return Err(RejectReason::Core(CoreRejectReason::Unsecure));
        }
        let key = publish_key(stream_id).map_err(|err| {
            info!(error = err.as_str(), "srt caller refused: bad stream id");
            RejectReason::Server(match err {
                StreamIdError::NotPublish => ServerRejectReason::BadMode,
                StreamIdError::Malformed => ServerRejectReason::BadRequest,
            })
        })?;
        span.record("key", fingerprint(&key).as_str());
        let ip = from.ip();
        if let Some(penalty) = lock(&self.shared.throttle).wait(ip, std::time::Instant::now()) {
            info!(
                retry_in_ms = penalty.as_millis() as u64,
                "srt caller refused: too many wrong keys from this address"
            );
            return Err(overload());
        }
        let s = &self.shared.settings;
        let per_ip = self.pending_per_ip.get(&ip).copied().unwrap_or(0);
        if self.live.len() + self.pending.len() >= s.max_connections
            || self.pending.len() >= s.max_pending
            || per_ip >= s.max_pending_per_ip
        {
            info!("srt caller refused: too many connections");
            return Err(overload());
        }
        Ok(key)
    }

    /// Runs the handshake state machine up to the access request: a fresh
    /// `Listen` is given a synthetic induction (with its own cookie, which
    /// then replaces ours in the conclusion), then the conclusion.
    async fn request(
        &mut self,
        from: SocketAddr,
        timestamp: TimeStamp,
        dest_sockid: SocketId,
        mut conclusion: HandshakeControlInfo,
    ) -> Option<Listen> {
        let mut listen = Listen::new(self.base.copy_randomize(), true);
        let induction = HandshakeControlInfo {
            shake_type: ShakeType::Induction,
            syn_cookie: 0,
            info: HandshakeVsInfo::V5(HsV5Info::default()),
            ..conclusion.clone()
        };
        let now = Instant::now();
        let packet = control(timestamp, SocketId(0), induction);
        let result = guarded("handshake", || {
            listen.handle_packet(now, Ok((packet, from)))
        });
        let Some(ConnectionResult::SendPacket((
            Packet::Control(ControlPacket {
                control_type: ControlTypes::Handshake(reply),
                ..
            }),
            _,
        ))) = result
        else {
            return None;
        };
        conclusion.syn_cookie = reply.syn_cookie;
        let packet = control(timestamp, dest_sockid, conclusion);
        match guarded("handshake", || {
            listen.handle_packet(now, Ok((packet, from)))
        })? {
            ConnectionResult::RequestAccess(_) => Some(listen),
            ConnectionResult::Reject(Some((reply, to)), _) => {
                self.send(reply, to).await;
                None
            }
            _ => None,
        }
    }

    /// Sends an SRT rejection and remembers it for retransmitted conclusions.
    async fn refuse(&mut self, listen: &mut Listen, from: SocketAddr, reason: RejectReason) {
        let result = guarded("rejection", || {
            listen.handle_access_control_response(
                Instant::now(),
                AccessControlResponse::Rejected(reason),
            )
        });
        let Some(ConnectionResult::Reject(Some((reply, to)), _)) = result else {
            return;
        };
        if self.rejections.len() >= MAX_REJECTIONS {
            self.sweep_rejections();
        }
        if self.rejections.len() < MAX_REJECTIONS {
            self.rejections.insert(
                from,
                Rejection {
                    reply: reply.clone(),
                    until: Instant::now() + REJECTION_MEMORY,
                },
            );
        }
        self.send(reply, to).await;
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Decision { addr, id, outcome } => self.decision(addr, id, outcome).await,
            Event::Ended { addr, id } => {
                if self.live.get(&addr).is_some_and(|live| live.id == id) {
                    self.live.remove(&addr);
                }
            }
        }
    }

    async fn decision(
        &mut self,
        addr: SocketAddr,
        id: u64,
        outcome: Result<Publication, SrtRefusal>,
    ) {
        let pending = match self.pending.remove(&addr) {
            Some(pending) if pending.id == id => pending,
            other => {
                // Expired meanwhile (cannot happen while the gate task keeps
                // its deadline): the claim is released.
                if let Some(other) = other {
                    self.pending.insert(addr, other);
                }
                if let Ok(publication) = outcome {
                    publication.close("aborted");
                }
                return;
            }
        };
        self.unpend(addr.ip());
        let Pending {
            mut listen,
            remote_socket,
            fingerprint,
            ..
        } = pending;
        let span = tracing::info_span!("srt", peer = %addr, key = fingerprint.as_str());
        let publication = match outcome {
            Ok(publication) => publication,
            Err(refusal) => {
                if refusal == SrtRefusal::UnknownKey {
                    lock(&self.shared.throttle).failed(addr.ip(), std::time::Instant::now());
                }
                span.in_scope(|| info!(reason = refusal.as_str(), "srt publish refused"));
                self.refuse(&mut listen, addr, refusal.reject_reason())
                    .instrument(span)
                    .await;
                return;
            }
        };
        lock(&self.shared.throttle).succeeded(addr.ip());
        let result = guarded("accept", || {
            listen.handle_access_control_response(
                Instant::now(),
                AccessControlResponse::Accepted(None),
            )
        });
        let Some(ConnectionResult::Connected(reply, connection)) = result else {
            span.in_scope(|| warn!("srt handshake could not be completed"));
            publication.close("protocol_error");
            return;
        };
        let reply = reply.map(|(packet, _)| packet);
        if let Some(packet) = reply.clone() {
            self.send(packet, addr).await;
        }
        let Some(connection) = guarded("accept", || DuplexConnection::new(connection)) else {
            publication.close("protocol_error");
            return;
        };
        let (queue, packets) = mpsc::channel(self.shared.settings.connection_queue.max(1));
        self.live.insert(
            addr,
            Live {
                id,
                queue,
                remote_socket,
                reply,
            },
        );
        let task = ConnectionTask::new(
            self.socket.clone(),
            addr,
            connection,
            packets,
            publication,
            self.shared.clone(),
            EndNotice {
                events: self.events.clone(),
                addr,
                id,
            },
        );
        span.in_scope(|| info!("srt publisher accepted"));
        self.tracker.spawn(task.run().instrument(span));
    }

    fn unpend(&mut self, ip: IpAddr) {
        if let Some(count) = self.pending_per_ip.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.pending_per_ip.remove(&ip);
            }
        }
    }

    /// Drops expired refusals and handshakes whose gate task is long gone.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.sweep_rejections();
        let stale = self.shared.settings.gate_timeout + Duration::from_secs(5);
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) > stale)
            .map(|(addr, _)| *addr)
            .collect();
        for addr in expired {
            self.pending.remove(&addr);
            self.unpend(addr.ip());
        }
        if now.duration_since(self.last_forget) >= FORGET_STALE_EVERY {
            self.last_forget = now;
            lock(&self.shared.throttle).forget_stale(now);
        }
    }

    fn sweep_rejections(&mut self) {
        let now = Instant::now();
        self.rejections.retain(|_, r| r.until > now);
    }

    fn window(&self) -> u64 {
        (self.started.elapsed().as_secs() / COOKIE_WINDOW.as_secs()).wrapping_add(1)
    }

    fn cookie(&self, from: SocketAddr, window: u64) -> i32 {
        self.secret.hash_one((from, window)) as i32
    }

    async fn send(&mut self, packet: Packet, to: SocketAddr) {
        send_packet(&self.socket, &mut self.send_buf, &packet, to).await;
    }
}

/// Serializes and sends one packet; failures are only logged (UDP).
async fn send_packet(socket: &UdpSocket, buf: &mut BytesMut, packet: &Packet, to: SocketAddr) {
    buf.clear();
    if guarded("serialize", || packet.serialize(buf)).is_none() {
        return;
    }
    if let Err(err) = socket.send_to(buf, to).await {
        debug!(peer = %to, error = %err, "srt send failed");
    }
}

fn control(timestamp: TimeStamp, dest_sockid: SocketId, shake: HandshakeControlInfo) -> Packet {
    Packet::Control(ControlPacket {
        timestamp,
        dest_sockid,
        control_type: ControlTypes::Handshake(shake),
    })
}

/// The handshake in `packet`, if it is one of `kind`.
fn handshake(packet: &Packet, kind: ShakeType) -> Option<&HandshakeControlInfo> {
    match packet {
        Packet::Control(ControlPacket {
            control_type: ControlTypes::Handshake(shake),
            ..
        }) if shake.shake_type == kind => Some(shake),
        _ => None,
    }
}

fn overload() -> RejectReason {
    RejectReason::Server(ServerRejectReason::Overload)
}

/// Parses a datagram; `None` for anything `srt-protocol` refuses or panics on.
fn parse(data: &[u8], is_ipv6: bool) -> Option<Packet> {
    guarded("parse", || Packet::parse(&mut Cursor::new(data), is_ipv6))?.ok()
}

/// Whether `data` is an SRT handshake control packet (control bit, type 0).
fn is_handshake(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0x80 && data[1] == 0x00
}

/// Makes a handshake datagram safe for `srt-protocol`'s parser, which
/// panics on extensions it does not know (congestion, filter and group:
/// libsrt sends them for `transtype=file`, packet filters and bonding, none
/// of which this server supports), and misreads the extension list (and then
/// panics) when an extension is longer than its parser consumes or repeated.
/// Returns `None` for such handshakes; otherwise the datagram with any key
/// material extension (encryption, refused anyway) removed, and whether
/// there was one.
fn sanitize_handshake(data: &[u8]) -> Option<(Cow<'_, [u8]>, bool)> {
    if data.len() < HANDSHAKE_BODY {
        return None;
    }
    let mut seen = [false; 6];
    let mut key_material = None;
    let mut at = HANDSHAKE_BODY;
    // As the parser: extensions while more than a header's worth is left.
    while data.len() - at > 4 {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let words = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        let end = at + 4 + 4 * words;
        let valid = match kind {
            EXT_HSREQ | EXT_HSRSP => words == 3,
            EXT_KMREQ | EXT_KMRSP => true,
            EXT_SID => (1..=128).contains(&words),
            _ => false,
        };
        let slot = seen.get_mut(usize::from(kind))?;
        if !valid || *slot || end > data.len() {
            return None;
        }
        *slot = true;
        if matches!(kind, EXT_KMREQ | EXT_KMRSP) {
            key_material = Some(at..end);
        }
        at = end;
    }
    let Some(range) = key_material else {
        return Some((Cow::Borrowed(data), false));
    };
    let mut stripped = data.to_vec();
    stripped.drain(range);
    // Extension flags, low byte: no key material follows any more.
    stripped[23] &= !EXT_FLAG_KM;
    Some((Cow::Owned(stripped), true))
}

/// Runs `f`, turning a panic inside `srt-protocol` into `None`.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(_) => {
            warn!(stage = what, "srt-protocol panicked on peer input");
            None
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Stream ids and keys
// ---------------------------------------------------------------------------

/// Why a stream id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamIdError {
    /// `m=` other than `publish` (`request` is a player).
    NotPublish,
    /// An access-control stream id that does not parse.
    Malformed,
}

impl StreamIdError {
    fn as_str(self) -> &'static str {
        match self {
            StreamIdError::NotPublish => "mode is not publish",
            StreamIdError::Malformed => "malformed access control stream id",
        }
    }
}

/// The stream key in a caller's stream id: the whole id, or `r=` of the
/// access-control form `#!::r=<key>,m=publish` (SRT's access control
/// guidelines; other keys such as `u=` are ignored, and a missing `m=` is
/// taken as publish since this server only ingests). A percent-encoded
/// `%23%21::` prefix (some ffmpeg builds pass the URL's encoding through)
/// is decoded first. A missing stream id gives an empty key, which the gate
/// refuses like any wrong key.
fn publish_key(stream_id: Option<&str>) -> Result<String, StreamIdError> {
    let Some(stream_id) = stream_id else {
        return Ok(String::new());
    };
    let decoded;
    let stream_id = if stream_id.starts_with("%23%21") {
        decoded = percent_decode(stream_id).ok_or(StreamIdError::Malformed)?;
        decoded.as_str()
    } else {
        stream_id
    };
    let Some(pairs) = stream_id.strip_prefix("#!::") else {
        return Ok(stream_id.to_owned());
    };
    let (mut resource, mut mode) = (None, None);
    for pair in pairs.split(',') {
        let (name, value) = pair.split_once('=').ok_or(StreamIdError::Malformed)?;
        let slot = match name.trim() {
            "r" => &mut resource,
            "m" => &mut mode,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(StreamIdError::Malformed);
        }
    }
    if mode.is_some_and(|m| m != "publish") {
        return Err(StreamIdError::NotPublish);
    }
    Ok(resource.unwrap_or_default().to_owned())
}

/// `%XX` decoding; `None` if the result is not UTF-8 or an escape is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// First 4 bytes of the key's SHA-256 in hex (as the RTMP server logs it).
fn fingerprint(key: &str) -> String {
    Sha256::digest(key.as_bytes())[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------

/// The sink of an accepted publisher. Dropping it without
/// [`Publication::close`] (a panic, a dropped task) still closes the sink, so
/// `close` runs exactly once.
struct Publication {
    sink: Option<Box<dyn AccessUnitSink>>,
}

impl Publication {
    fn new(sink: Box<dyn AccessUnitSink>) -> Publication {
        Publication { sink: Some(sink) }
    }

    fn close(mut self, reason: &'static str) {
        if let Some(sink) = self.sink.take() {
            sink.close(reason);
        }
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.close("aborted");
        }
    }
}

/// Tells the socket task that a connection ended, however its task ends.
struct EndNotice {
    events: mpsc::UnboundedSender<Event>,
    addr: SocketAddr,
    id: u64,
}

impl Drop for EndNotice {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Ended {
            addr: self.addr,
            id: self.id,
        });
    }
}

struct ConnectionTask {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    connection: DuplexConnection,
    packets: mpsc::Receiver<Packet>,
    publication: Publication,
    kicked: CancellationToken,
    idle_timeout: Duration,
    shared: Arc<Shared>,
    demuxer: TsDemuxer,
    frames: Vec<Frame>,
    send_buf: BytesMut,
    /// The caller sent an SRT shutdown (a clean end).
    goodbye: bool,
    /// When the demuxer last produced an access unit.
    last_media: Instant,
    /// Last packet of any kind from the caller. `srt-protocol`'s own peer
    /// idle timer only fires after 16 expiry periods (5-8 s) whatever its
    /// setting, so the setting is enforced here.
    last_packet: Instant,
    _end: EndNotice,
}

impl ConnectionTask {
    fn new(
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
        connection: DuplexConnection,
        packets: mpsc::Receiver<Packet>,
        publication: Publication,
        shared: Arc<Shared>,
        end: EndNotice,
    ) -> ConnectionTask {
        let sink = publication.sink.as_deref();
        let kicked = sink.map(|s| s.kicked()).unwrap_or_default();
        let idle_timeout = sink.map_or(Duration::from_secs(10), |s| s.idle_timeout());
        ConnectionTask {
            socket,
            peer,
            connection,
            packets,
            publication,
            kicked,
            idle_timeout,
            shared,
            demuxer: TsDemuxer::new(),
            frames: Vec::new(),
            send_buf: BytesMut::with_capacity(MAX_DATAGRAM),
            goodbye: false,
            last_media: Instant::now(),
            last_packet: Instant::now(),
            _end: end,
        }
    }

    async fn run(mut self) {
        let reason = match self.drive().await {
            Ok(never) => match never {},
            Err(reason) => reason,
        };
        if matches!(reason, "unpublished" | "disconnected") {
            // The caller is gone: what it completed is still good.
            self.demuxer.finish(&mut self.frames);
            self.deliver();
        } else {
            // We end it: tell the caller (ffmpeg exits with an I/O error).
            self.say_goodbye().await;
        }
        let s = self.demuxer.stats();
        let srt = self.connection.statistics();
        info!(
            reason,
            ts_packets = s.packets,
            video_frames = s.video_frames,
            audio_frames = s.audio_frames,
            ts_continuity_errors = s.continuity_errors,
            ts_dropped_pes = s.dropped_pes,
            srt_packets = srt.rx_unique_data,
            srt_lost = srt.rx_loss_data,
            srt_dropped = srt.rx_dropped_data,
            srt_retransmitted = srt.rx_retransmit_data,
            "srt publisher gone"
        );
        std::mem::replace(&mut self.publication, Publication { sink: None }).close(reason);
    }

    /// Runs the connection until it ends; the error is the close reason.
    async fn drive(&mut self) -> Result<std::convert::Infallible, &'static str> {
        let shutdown = self.shared.shutdown.clone();
        let kicked = self.kicked.clone();
        loop {
            self.flush().await?;
            self.release()?;
            if !self.connection.is_open() {
                return Err(if self.goodbye {
                    "unpublished"
                } else {
                    "disconnected"
                });
            }
            let wake = self.call(|c| c.check_timers(Instant::now()))?;
            self.flush().await?;
            let idle_at = self.last_media + self.idle_timeout;
            let silent_at = self.last_packet + self.shared.settings.peer_idle_timeout;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err("shutdown"),
                () = kicked.cancelled() => {
                    info!("srt publisher kicked");
                    return Err("kicked");
                }
                () = tokio::time::sleep_until(idle_at.into()) => {
                    info!("srt publisher sent no media for the idle timeout");
                    return Err("idle_timeout");
                }
                () = tokio::time::sleep_until(silent_at.into()) => {
                    info!("srt caller went silent");
                    return Err("disconnected");
                }
                () = tokio::time::sleep_until(wake.into()) => {}
                packet = self.packets.recv() => {
                    let Some(packet) = packet else {
                        return Err("shutdown"); // the socket task is gone
                    };
                    self.input(packet)?;
                    for _ in 1..PACKET_BATCH {
                        match self.packets.try_recv() {
                            Ok(packet) => self.input(packet)?,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }

    fn input(&mut self, packet: Packet) -> Result<(), &'static str> {
        self.last_packet = Instant::now();
        if let Packet::Control(ControlPacket { control_type, .. }) = &packet {
            match control_type {
                ControlTypes::Shutdown => self.goodbye = true,
                // `srt-protocol` panics on these (`todo!`/`unimplemented!`);
                // libsrt does not send them to a live-mode receiver.
                ControlTypes::CongestionWarning | ControlTypes::PeerError(_) => return Ok(()),
                ControlTypes::Srt(srt)
                    if !matches!(
                        srt,
                        SrtControlPacket::HandshakeRequest(_)
                            | SrtControlPacket::HandshakeResponse(_)
                            | SrtControlPacket::KeyRefreshRequest(_)
                            | SrtControlPacket::KeyRefreshResponse(_)
                    ) =>
                {
                    return Ok(());
                }
                _ => {}
            }
        }
        let peer = self.peer;
        self.call(|c| c.handle_packet_input(Instant::now(), Ok((packet, peer))))
    }

    /// Hands the data released by TSBPD to the demuxer and the sink.
    fn release(&mut self) -> Result<(), &'static str> {
        while let Some((_, data)) = self.call(|c| c.next_data(Instant::now()))? {
            self.demuxer.push(&data, &mut self.frames);
            if !self.frames.is_empty() {
                // Media is access units: a caller that keeps the connection
                // busy with junk or stuffing still counts as idle.
                self.last_media = Instant::now();
            }
            if let Some(stream_type) = self.demuxer.program().and_then(|p| p.unsupported_video()) {
                info!(stream_type, "srt publisher sent an unsupported video codec");
                return Err("bad_media");
            }
            self.deliver();
        }
        Ok(())
    }

    fn deliver(&mut self) {
        let Some(sink) = self.publication.sink.as_deref_mut() else {
            return;
        };
        if self.demuxer.take_codecs_changed() {
            sink.codecs(
                self.demuxer.video_codec(),
                self.demuxer.audio_codec(),
                self.demuxer.dimensions(),
            );
        }
        for frame in self.frames.drain(..) {
            match frame {
                Frame::Video(frame) => sink.video(frame),
                Frame::Audio(frame) => sink.audio(frame),
            }
        }
    }

    /// Sends what the connection queued.
    async fn flush(&mut self) -> Result<(), &'static str> {
        while let Some((packet, to)) = self.call(|c| c.next_packet(Instant::now()))? {
            send_packet(&self.socket, &mut self.send_buf, &packet, to).await;
        }
        Ok(())
    }

    /// Sends the caller an SRT shutdown (best effort).
    async fn say_goodbye(&mut self) {
        let now = Instant::now();
        if self.call(|c| c.handle_data_input(now, None)).is_err() || self.flush().await.is_err() {
            return;
        }
        if self.call(|c| c.check_timers(now)).is_ok() {
            let _ = self.flush().await;
        }
    }

    /// Calls into the connection; a panic ends it as a protocol error.
    fn call<T>(&mut self, f: impl FnOnce(&mut DuplexConnection) -> T) -> Result<T, &'static str> {
        let connection = &mut self.connection;
        guarded("connection", || f(connection)).ok_or("protocol_error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_in_both_forms() {
        let key = "a-_Z".repeat(8);
        assert_eq!(publish_key(Some(&key)), Ok(key.clone()));
        let acl = format!("#!::r={key},m=publish");
        assert_eq!(publish_key(Some(&acl)), Ok(key.clone()));
        let acl = format!("#!::u=someone,m=publish,r={key}");
        assert_eq!(publish_key(Some(&acl)), Ok(key.clone()));
        let acl = format!("#!::r={key}");
        assert_eq!(publish_key(Some(&acl)), Ok(key.clone()));
        let encoded = format!("%23%21%3A%3Ar%3D{key}%2Cm%3Dpublish");
        assert_eq!(publish_key(Some(&encoded)), Ok(key.clone()));
        let play = format!("#!::r={key},m=request");
        assert_eq!(publish_key(Some(&play)), Err(StreamIdError::NotPublish));
        assert_eq!(
            publish_key(Some("#!::r=a,r=b,m=publish")),
            Err(StreamIdError::Malformed)
        );
        assert_eq!(publish_key(Some("#!::junk")), Err(StreamIdError::Malformed));
        assert_eq!(
            publish_key(Some("%23%21%zz")),
            Err(StreamIdError::Malformed)
        );
        assert_eq!(publish_key(None), Ok(String::new()));
        assert_eq!(publish_key(Some("#!::m=publish")), Ok(String::new()));
    }

    #[test]
    fn fingerprints_do_not_reveal_the_key() {
        let f = fingerprint("secret-key");
        assert_eq!(f.len(), 8);
        assert!(!f.contains("secret"));
        assert_eq!(f, fingerprint("secret-key"));
    }

    /// A handshake body (conclusion, HSv5) followed by `extensions`.
    fn handshake_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut hs = vec![0u8; HANDSHAKE_BODY];
        hs[0] = 0x80;
        hs[16..20].copy_from_slice(&5u32.to_be_bytes());
        hs[28..32].copy_from_slice(&(-1i32).to_be_bytes());
        for (kind, content) in extensions {
            hs.extend_from_slice(&kind.to_be_bytes());
            hs.extend_from_slice(&((content.len() / 4) as u16).to_be_bytes());
            hs.extend_from_slice(content);
        }
        hs
    }

    #[test]
    fn handshakes_are_sanitized_before_parsing() {
        let sid = (EXT_SID, b"abcd".to_vec());
        let hsreq = (EXT_HSREQ, vec![0; 12]);
        let ok = handshake_with(&[hsreq.clone(), sid.clone()]);
        assert!(matches!(
            sanitize_handshake(&ok),
            Some((Cow::Borrowed(_), false))
        ));
        let filter = handshake_with(&[hsreq.clone(), (7, b"fec\0".to_vec())]);
        assert!(sanitize_handshake(&filter).is_none(), "packet filter");
        let congestion = handshake_with(&[(6, b"file".to_vec())]);
        assert!(sanitize_handshake(&congestion).is_none(), "file mode");
        assert!(sanitize_handshake(&handshake_with(&[sid.clone(), sid.clone()])).is_none());
        assert!(sanitize_handshake(&handshake_with(&[(EXT_HSREQ, vec![0; 16])])).is_none());
        let mut truncated = ok.clone();
        truncated.truncate(ok.len() - 2);
        assert!(sanitize_handshake(&truncated).is_none());
        let mut flags = handshake_with(&[hsreq.clone(), (EXT_KMREQ, vec![1; 24]), sid.clone()]);
        flags[23] = 0x07;
        let (clean, key_material) = sanitize_handshake(&flags).unwrap();
        assert!(key_material);
        assert_eq!(clean.len(), flags.len() - 28);
        assert_eq!(clean[23], 0x05, "KM flag cleared");
        assert!(!is_handshake(&ok[..1]));
        assert!(is_handshake(&ok));
    }

    #[test]
    fn sanitized_handshakes_never_panic_the_parser() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut parsed = 0;
        for _ in 0..100_000 {
            let extensions: Vec<_> = (0..next() % 4)
                .map(|_| {
                    let kind = (next() % 7) as u16;
                    let words = if next() % 2 == 0 { 3 } else { next() % 10 };
                    (kind, (0..words * 4).map(|_| next() as u8).collect())
                })
                .collect();
            let mut data = handshake_with(&extensions);
            for b in &mut data[2..HANDSHAKE_BODY] {
                if next() % 4 == 0 {
                    *b = next() as u8;
                }
            }
            if next() % 5 == 0 {
                let cut = HANDSHAKE_BODY + (next() as usize) % (data.len() - HANDSHAKE_BODY + 1);
                data.truncate(cut);
            }
            let Some((clean, _)) = sanitize_handshake(&data) else {
                continue;
            };
            let result = catch_unwind(|| Packet::parse(&mut Cursor::new(&clean[..]), false));
            assert!(result.is_ok(), "parser panicked on {data:02x?}");
            parsed += usize::from(result.is_ok_and(|r| r.is_ok()));
        }
        assert!(parsed > 1000, "{parsed}");
    }

    #[test]
    fn garbage_never_panics_the_parser_guard() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in 0..2000 {
            let data: Vec<u8> = (0..len % 1500)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = parse(&data, false);
        }
    }
}
