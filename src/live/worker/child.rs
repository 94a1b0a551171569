//! The stream's side: `media-node work-live --stream ID`.
//!
//! Reads [`ToWorker`] messages on stdin: first `Start` (the sandbox, entered
//! at once, while the process has one thread and before any media), then
//! sessions' frames and poster requests; answers on stdout. Three threads
//! besides GStreamer's: this one reads, a writer writes (the only one that
//! touches stdout), a poster thread decodes keyframes. Ends when the node
//! closes stdin.

use std::io::{BufReader, BufWriter};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tracing::{info, warn};
use uuid::Uuid;

use super::encode::{Encoder, Outgoing};
use super::wire::{self, FromWorker, ToWorker};
use crate::sandbox::{self, Enforced};

/// Messages waiting for the writer: rung frames of every session (a few
/// seconds of a 3-rung ladder at 30 fps).
const OUT_QUEUE: usize = 512;
/// Poster requests waiting for the poster thread; more are refused at once.
const POSTER_QUEUE: usize = 2;

pub fn work_live_main(stream: Uuid) -> ExitCode {
    let mut input = BufReader::new(std::io::stdin().lock());
    let (policy, log) = match wire::read::<ToWorker>(&mut input) {
        Ok(Some((ToWorker::Start { policy, log }, _))) => (policy, log),
        Ok(_) => {
            eprintln!("media-node work-live: the first message must be `start`");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("media-node work-live: cannot read the start message: {e}");
            return ExitCode::from(2);
        }
    };
    // Confined while it has one thread, before it reads a byte of media.
    let enforced = match sandbox::enter(&policy) {
        Ok(enforced) => enforced,
        Err(e) => {
            eprintln!("media-node work-live: cannot confine itself: {e}");
            return ExitCode::from(2);
        }
    };
    sandbox::limits::die_on_fatal_signals();
    crate::telemetry::init(&log);
    let span = tracing::info_span!("live_media", stream_id = %stream);
    let _entered = span.enter();
    if enforced != Enforced::Fully {
        warn!(
            ?enforced,
            "this kernel confines the media process only in part"
        );
    }
    if let Err(e) = crate::media::init() {
        warn!(error = %e, "GStreamer does not start");
        return ExitCode::FAILURE;
    }
    let (out, outgoing) = sync_channel::<Outgoing>(OUT_QUEUE);
    let writer = match spawn("writer", move || write_all(outgoing)) {
        Ok(writer) => writer,
        Err(code) => return code,
    };
    let (posters, requests) = sync_channel::<(u64, u32, Vec<u8>)>(POSTER_QUEUE);
    let poster_out = out.clone();
    if let Err(code) = spawn("posters", move || make_posters(requests, poster_out)) {
        return code;
    }
    info!("live media process ready");
    let mut encoder = Encoder::new(out.clone());
    loop {
        match wire::read::<ToWorker>(&mut input) {
            Ok(Some((message, payload))) => {
                dispatch(&mut encoder, &posters, &out, message, payload);
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "unreadable message from the node");
                break;
            }
        }
    }
    drop((encoder, posters, out));
    let _ = writer.join();
    ExitCode::SUCCESS
}

fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, ExitCode> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| {
            warn!(error = %e, thread = name, "cannot start a thread");
            ExitCode::FAILURE
        })
}

fn dispatch(
    encoder: &mut Encoder,
    posters: &SyncSender<(u64, u32, Vec<u8>)>,
    out: &SyncSender<Outgoing>,
    message: ToWorker,
    payload: Vec<u8>,
) {
    match message {
        ToWorker::Start { .. } => warn!("a second start message is ignored"),
        ToWorker::Begin {
            session,
            spec,
            sizes,
        } => encoder.begin(session, &spec, &sizes),
        ToWorker::Frame {
            session,
            pts_ns,
            dts_ns,
            keyframe,
            cut,
        } => encoder.frame(session, pts_ns, dts_ns, keyframe, cut, payload),
        ToWorker::Finish { session } => encoder.finish(session),
        ToWorker::Poster { id, width } => {
            if let Err(TrySendError::Full((id, ..)) | TrySendError::Disconnected((id, ..))) =
                posters.try_send((id, width, payload))
            {
                let error = Some("the poster decoder is busy".to_string());
                let _ = out.send((FromWorker::Poster { id, error }, Vec::new()));
            }
        }
    }
}

/// The writer thread: every message for the node, in order, until all
/// senders are gone or the node stops reading.
fn write_all(outgoing: Receiver<Outgoing>) {
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    for (message, payload) in outgoing {
        if let Err(e) = wire::write(&mut stdout, &message, &payload) {
            warn!(error = %e, "cannot write to the node");
            return;
        }
    }
}

/// The poster thread: one keyframe at a time to a JPEG.
fn make_posters(requests: Receiver<(u64, u32, Vec<u8>)>, out: SyncSender<Outgoing>) {
    for (id, width, keyframe) in requests {
        let (error, jpeg) = match crate::live::poster::make_poster(&keyframe, width) {
            Ok(jpeg) => (None, jpeg),
            Err(e) => (Some(e), Vec::new()),
        };
        if out.send((FromWorker::Poster { id, error }, jpeg)).is_err() {
            return;
        }
    }
}
