//! The one function that drives a pipeline: to EOS over the bus, mapping errors,
//! reporting progress, honouring cancellation, and always back to `Null`.
//!
//! Runs on the async runtime: the bus is read as a stream, position queries are
//! cheap, and the final state change (which joins streaming threads) happens on the
//! blocking pool.

use std::time::Duration;

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio_util::sync::CancellationToken;

use super::MediaError;

/// How often progress is sampled.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);

/// How a run ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Eos,
    Canceled,
}

/// Progress as a fraction 0.0-1.0 of `duration`.
pub type ProgressFn<'a> = &'a (dyn Fn(f64) + Send + Sync);

/// Plays `pipeline` until EOS, an error, or `cancel`. `on_message` sees every
/// element message (e.g. `splitmuxsink-fragment-closed`).
pub async fn run_to_eos(
    pipeline: &gst::Pipeline,
    cancel: &CancellationToken,
    duration: Option<Duration>,
    progress: ProgressFn<'_>,
    mut on_message: impl FnMut(&gst::StructureRef),
) -> Result<Finished, MediaError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Internal("pipeline without a bus".into()))?;
    let mut messages = bus.stream();
    let outcome = match pipeline.set_state(gst::State::Playing) {
        Err(_) => {
            // The reason is on the bus.
            let mut reason = MediaError::Internal("the pipeline refused to start".into());
            while let Some(msg) = bus.pop() {
                if let gst::MessageView::Error(err) = msg.view() {
                    reason = classify(err);
                    break;
                }
            }
            Err(reason)
        }
        Ok(_) => {
            let mut tick = tokio::time::interval(PROGRESS_PERIOD);
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some(msg) = msg else {
                            break Err(MediaError::Internal("bus closed".into()));
                        };
                        match msg.view() {
                            gst::MessageView::Eos(_) => break Ok(Finished::Eos),
                            gst::MessageView::Error(err) => break Err(classify(err)),
                            gst::MessageView::Element(el) => {
                                if let Some(s) = el.structure() {
                                    on_message(s);
                                }
                            }
                            _ => {}
                        }
                    }
                    _ = tick.tick() => {
                        if let (Some(total), Some(pos)) =
                            (duration, pipeline.query_position::<gst::ClockTime>())
                            && !total.is_zero()
                        {
                            let done = pos.nseconds() as f64 / total.as_nanos() as f64;
                            progress(done.clamp(0.0, 1.0));
                        }
                    }
                    _ = cancel.cancelled() => break Ok(Finished::Canceled),
                }
            }
        }
    };
    stop(pipeline).await;
    outcome
}

/// Sets the pipeline to `Null` on the blocking pool (it joins streaming threads).
pub async fn stop(pipeline: &gst::Pipeline) {
    let pipeline = pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    })
    .await;
}

/// Maps a pipeline error: decoding and demuxing problems are the input's fault;
/// failing to write local files may pass; anything else is an internal failure.
fn classify(err: &gst::message::Error) -> MediaError {
    let error = err.error();
    let source = err
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    let message = format!("{} ({source})", error.message());
    if let Some(stream) = error.kind::<gst::StreamError>() {
        return match stream {
            gst::StreamError::CodecNotFound => MediaError::UnsupportedCodec(message),
            gst::StreamError::Encode | gst::StreamError::Mux => MediaError::Internal(message),
            _ => MediaError::Malformed(message),
        };
    }
    if let Some(resource) = error.kind::<gst::ResourceError>() {
        return match resource {
            gst::ResourceError::Write
            | gst::ResourceError::OpenWrite
            | gst::ResourceError::NoSpaceLeft
            | gst::ResourceError::Close => MediaError::Io(message),
            _ => MediaError::Malformed(message),
        };
    }
    if error.kind::<gst::CoreError>() == Some(gst::CoreError::MissingPlugin) {
        return MediaError::UnsupportedCodec(message);
    }
    if source.contains("decodebin") || source.contains("demux") {
        return MediaError::Malformed(message);
    }
    MediaError::Internal(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(desc: &str) -> gst::Pipeline {
        super::super::init().unwrap();
        gst::parse::launch(desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap()
    }

    #[tokio::test]
    async fn runs_to_eos_and_reports_progress() {
        let pipeline =
            launch("videotestsrc num-buffers=60 ! video/x-raw,framerate=30/1 ! fakesink sync=true");
        let seen = std::sync::Mutex::new(0.0f64);
        let progress = |p: f64| *seen.lock().unwrap() = p;
        let done = run_to_eos(
            &pipeline,
            &CancellationToken::new(),
            Some(Duration::from_secs(2)),
            &progress,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(done, Finished::Eos);
        assert!(*seen.lock().unwrap() > 0.2);
        assert_eq!(pipeline.current_state(), gst::State::Null);
    }

    #[tokio::test]
    async fn cancel_stops_promptly() {
        let pipeline = launch("videotestsrc is-live=true ! fakesink");
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let started = std::time::Instant::now();
        let done = run_to_eos(&pipeline, &cancel, None, &|_| {}, |_| {})
            .await
            .unwrap();
        assert_eq!(done, Finished::Canceled);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(pipeline.current_state(), gst::State::Null);
    }

    #[tokio::test]
    async fn errors_are_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.mp4");
        std::fs::write(&path, b"\0\0\0\x18ftypisom\0\0\0\0isomiso2 garbage garbage").unwrap();
        let pipeline = launch(&format!(
            "filesrc location={} ! qtdemux ! fakesink",
            path.display()
        ));
        let err = run_to_eos(&pipeline, &CancellationToken::new(), None, &|_| {}, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, MediaError::Malformed(_)), "{err:?}");
    }
}
