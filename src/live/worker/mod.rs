//! A live stream's media process: the renditions' decode and encodes and the
//! poster decodes of one stream run in a child, `media-node work-live
//! --stream ID`, confined like a job's ([`crate::sandbox`]). The source relay
//! (Rust parsers, no C) stays in the node.
//!
//! ```text
//!  node                                       child (work-live --stream ID)
//!  Session::push ─try_send─▶ writer task ─stdin─▶ read loop ─▶ encode (GStreamer)
//!  Ladder::output ◀─ reader task ◀─stdout── writer thread ◀─try_send─ appsinks
//!  PosterTap ◀──────────────┘                 poster thread ◀─┘
//! ```
//!
//! The node never waits on the child: frames go through a bounded channel
//! with `try_send` (full: the session is overloaded), and everything that
//! comes back is checked (sessions it knows, rung indexes in range, sizes
//! capped by [`wire`]). When the child dies, every session it had ends
//! `Crashed` and the crash is counted
//! (`media_node_child_crashes_total{kind="live"}`); the next session or
//! poster starts a new child.
//!
//! The child starts with the stream's first session or poster and lives as
//! long as the stream is relayed on this node (it ends when the node closes
//! its stdin).

pub mod child;
pub mod encode;
pub mod wire;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument as _, debug, info, warn};
use uuid::Uuid;

use super::metrics::LiveMetrics;
use super::segmenter::VideoFrame;
use crate::config::LogConfig;
use crate::presets::live::LiveTranscode;
use crate::sandbox::{self, Limits, Policy};
use wire::{FromWorker, SessionEnd, ToWorker, from_ns, to_ns};

/// Messages waiting for the child (about 4 s of frames at 30 fps).
const CHANNEL: usize = 128;
/// Open files a stream's child may hold.
const OPEN_FILES: u64 = 1024;
/// How long a poster may take in the child.
const POSTER_TIMEOUT: Duration = Duration::from_secs(10);

/// What every stream's media process is given.
#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// `jobs.child_memory_limit_mb` (0: none).
    pub memory_limit_mb: u64,
    pub log: LogConfig,
}

/// Where the encoded frames of a session go (the stream's ladder).
pub trait RungSink: Send + Sync {
    /// An encoded frame of rung `index` from session `session`; `cut` when the
    /// source started a segment there.
    fn rung_frame(&self, index: usize, session: u64, frame: VideoFrame, cut: bool);
}

/// How a session ended, as the node sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Child(SessionEnd),
    /// The media process died (the signal's name, or `exit`).
    Crashed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the stream's media process: {0}")]
    Spawn(std::io::Error),
    #[error("the stream's media process does not keep up")]
    Busy,
    #[error("the stream's media process is gone")]
    Gone,
}

type Outgoing = (ToWorker, Bytes);

struct Route {
    sink: Weak<dyn RungSink>,
    /// Publisher time (90 kHz) at pipeline time 0.
    base: i64,
    /// PTS − DTS of the rungs' frames (no B-frames: constant).
    composition: i64,
    rungs: usize,
    over: oneshot::Sender<Ended>,
}

/// What one child answers to: its sessions and its pending posters.
#[derive(Default)]
struct Routes {
    sessions: Mutex<HashMap<u64, Route>>,
    posters: Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, String>>>>,
}

impl Routes {
    fn sessions(&self) -> MutexGuard<'_, HashMap<u64, Route>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn posters(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Bytes, String>>>> {
        self.posters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The child is gone: everything it had ends.
    fn fail_all(&self, why: &str) {
        for (_, route) in self.sessions().drain() {
            let _ = route.over.send(Ended::Crashed(why.to_string()));
        }
        for (_, poster) in self.posters().drain() {
            let _ = poster.send(Err(format!("the media process ended ({why})")));
        }
    }
}

/// A running child.
struct Instance {
    generation: u64,
    tx: mpsc::Sender<Outgoing>,
    routes: Arc<Routes>,
}

/// One stream's media process, started when first needed.
pub struct StreamWorker {
    stream: Uuid,
    config: Arc<WorkerConfig>,
    metrics: LiveMetrics,
    instance: Mutex<Option<Instance>>,
    generations: AtomicU64,
    next_poster: AtomicU64,
    me: Weak<StreamWorker>,
}

/// The node's end of one session in the child.
pub struct SessionLink {
    session: u64,
    base: i64,
    tx: mpsc::Sender<Outgoing>,
}

impl SessionLink {
    /// Sends one source access unit; never waits.
    pub fn frame(&self, frame: &VideoFrame, cut: bool) -> Result<(), WorkerError> {
        let message = ToWorker::Frame {
            session: self.session,
            pts_ns: to_ns(frame.pts.max(frame.dts) - self.base),
            dts_ns: to_ns(frame.dts - self.base),
            keyframe: frame.keyframe,
            cut,
        };
        self.tx
            .try_send((message, frame.data.clone()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WorkerError::Busy,
                mpsc::error::TrySendError::Closed(_) => WorkerError::Gone,
            })
    }

    /// The session is over: the child flushes its encoders.
    pub fn finish(&self) {
        let _ = self.tx.try_send((
            ToWorker::Finish {
                session: self.session,
            },
            Bytes::new(),
        ));
    }
}

/// A session to start: what the child needs and where its frames go.
pub struct SessionStart<'a> {
    pub session: u64,
    pub spec: &'a LiveTranscode,
    pub sizes: Vec<(u32, u32)>,
    pub base: i64,
    pub composition: i64,
    pub sink: Weak<dyn RungSink>,
}

impl StreamWorker {
    pub fn new(stream: Uuid, config: Arc<WorkerConfig>, metrics: LiveMetrics) -> Arc<StreamWorker> {
        Arc::new_cyclic(|me| StreamWorker {
            stream,
            config,
            metrics,
            instance: Mutex::new(None),
            generations: AtomicU64::new(0),
            next_poster: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Instance>> {
        self.instance.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session in the child (starting the child if need be); its end
    /// arrives on the receiver.
    pub fn begin(
        &self,
        start: SessionStart<'_>,
    ) -> Result<(SessionLink, oneshot::Receiver<Ended>), WorkerError> {
        let (tx, routes) = self.running()?;
        let (over, ended) = oneshot::channel();
        routes.sessions().insert(
            start.session,
            Route {
                sink: start.sink,
                base: start.base,
                composition: start.composition,
                rungs: start.sizes.len(),
                over,
            },
        );
        let message = ToWorker::Begin {
            session: start.session,
            spec: start.spec.clone(),
            sizes: start.sizes,
        };
        if let Err(e) = tx.try_send((message, Bytes::new())) {
            routes.sessions().remove(&start.session);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => WorkerError::Busy,
                mpsc::error::TrySendError::Closed(_) => WorkerError::Gone,
            });
        }
        Ok((
            SessionLink {
                session: start.session,
                base: start.base,
                tx,
            },
            ended,
        ))
    }

    /// Decodes `keyframe` into a JPEG `width` wide, in the child.
    pub async fn poster(&self, keyframe: Bytes, width: u32) -> Result<Bytes, String> {
        let (tx, routes) = self.running().map_err(|e| e.to_string())?;
        let id = self.next_poster.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        routes.posters().insert(id, done);
        if tx
            .try_send((ToWorker::Poster { id, width }, keyframe))
            .is_err()
        {
            routes.posters().remove(&id);
            return Err("the media process does not keep up".into());
        }
        match tokio::time::timeout(POSTER_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the media process ended".into()),
            Err(_) => {
                routes.posters().remove(&id);
                Err("the poster took too long".into())
            }
        }
    }

    /// Stops routing what session `session` still sends (the node gave up
    /// waiting for it).
    pub fn forget(&self, session: u64) {
        if let Some(instance) = self.lock().as_ref() {
            instance.routes.sessions().remove(&session);
        }
    }

    /// The running child's channel and routes, starting one if none runs.
    fn running(&self) -> Result<(mpsc::Sender<Outgoing>, Arc<Routes>), WorkerError> {
        let mut instance = self.lock();
        if let Some(running) = instance.as_ref()
            && !running.tx.is_closed()
        {
            return Ok((running.tx.clone(), running.routes.clone()));
        }
        let started = self.spawn()?;
        let out = (started.tx.clone(), started.routes.clone());
        *instance = Some(started);
        Ok(out)
    }

    fn spawn(&self) -> Result<Instance, WorkerError> {
        let stream = self.stream.to_string();
        let args = [
            OsStr::new("work-live"),
            OsStr::new("--stream"),
            OsStr::new(&stream),
        ];
        let mut cmd = sandbox::spawn::command(args, Path::new("/")).map_err(WorkerError::Spawn)?;
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(WorkerError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(WorkerError::Spawn(std::io::Error::other(
                "no pipes to the child",
            )));
        };
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let pid = child.id();
        let span = tracing::info_span!("live_media", stream_id = %self.stream, pid);
        span.in_scope(|| info!("live media process started"));
        let (tx, rx) = mpsc::channel(CHANNEL);
        let start = ToWorker::Start {
            policy: self.policy(),
            log: self.config.log.clone(),
        };
        tx.try_send((start, Bytes::new()))
            .map_err(|_| WorkerError::Gone)?;
        let routes = Arc::new(Routes::default());
        tokio::spawn(write_to(stdin, rx).instrument(span.clone()));
        let reader = tokio::spawn(read_from(stdout, routes.clone()).instrument(span.clone()));
        let me = self.me.clone();
        let waited_routes = routes.clone();
        tokio::spawn(
            async move {
                let status = child.wait().await;
                let _ = reader.await;
                let why = match &status {
                    Ok(s) if s.success() => "exit".to_string(),
                    Ok(s) => match s.signal() {
                        Some(sig) => sandbox::spawn::signal_name(sig),
                        None => "exit".to_string(),
                    },
                    Err(_) => "exit".to_string(),
                };
                let clean = matches!(&status, Ok(s) if s.success());
                if let Some(worker) = me.upgrade() {
                    if !clean {
                        warn!(status = ?status, signal = %why, "live media process crashed");
                        worker.metrics.child_crashed(&why);
                    } else {
                        debug!("live media process ended");
                    }
                    let mut instance = worker.lock();
                    if instance
                        .as_ref()
                        .is_some_and(|i| i.generation == generation)
                    {
                        *instance = None;
                    }
                }
                waited_routes.fail_all(&why);
            }
            .instrument(span),
        );
        Ok(Instance {
            generation,
            tx,
            routes,
        })
    }

    /// The child's sandbox: it reads the GStreamer registry, its binary and
    /// system files, writes no file, and is held to the memory limit.
    fn policy(&self) -> Policy {
        let mut read = vec![crate::media::registry::path()];
        read.extend(std::env::current_exe().ok());
        let mb = self.config.memory_limit_mb;
        Policy::new(
            read,
            Vec::new(),
            Limits {
                memory_bytes: (mb > 0).then_some(mb << 20),
                // A stream runs for hours: its time limit is the stream's.
                cpu_seconds: None,
                // It opens no file for writing (Landlock); its stderr is the
                // node's, which may be a file of any size.
                file_bytes: None,
                open_files: Some(OPEN_FILES),
            },
        )
    }
}

/// The writer task: messages to the child's stdin until the worker drops
/// its channel (then the child sees the end and exits) or the child is gone.
async fn write_to(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some((message, payload)) = rx.recv().await {
        let written = match wire::encode(&message, &payload) {
            Ok(bytes) => stdin.write_all(&bytes).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            debug!(error = %e, "the live media process takes no more input");
            return;
        }
    }
}

/// The reader task: the child's answers to their sessions and posters.
async fn read_from(stdout: tokio::process::ChildStdout, routes: Arc<Routes>) {
    let mut stdout = tokio::io::BufReader::new(stdout);
    loop {
        match wire::read_async::<FromWorker>(&mut stdout).await {
            Ok(Some((message, payload))) => route(&routes, message, payload),
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "unreadable answer from the live media process");
                return;
            }
        }
    }
}

fn route(routes: &Routes, message: FromWorker, payload: Vec<u8>) {
    match message {
        FromWorker::Rung {
            session,
            index,
            pts_ns,
            keyframe,
            cut,
        } => {
            let (sink, frame) = {
                let sessions = routes.sessions();
                let Some(route) = sessions.get(&session) else {
                    return;
                };
                if index >= route.rungs {
                    warn!(
                        session,
                        index, "the live media process named a rung it does not have"
                    );
                    return;
                }
                let pts = route.base + from_ns(pts_ns);
                let frame = VideoFrame {
                    pts,
                    dts: pts - route.composition,
                    keyframe,
                    data: Bytes::from(payload),
                };
                (route.sink.clone(), frame)
            };
            // The sink takes its own locks: not under the routes' lock.
            if let Some(sink) = sink.upgrade() {
                sink.rung_frame(index, session, frame, cut);
            }
        }
        FromWorker::Over { session, end } => {
            if let Some(route) = routes.sessions().remove(&session) {
                let _ = route.over.send(Ended::Child(end));
            }
        }
        FromWorker::Poster { id, error } => {
            if let Some(done) = routes.posters().remove(&id) {
                let _ = done.send(match error {
                    None => Ok(Bytes::from(payload)),
                    Some(e) => Err(e),
                });
            }
        }
    }
}
