//! Glue between the ingest servers and the live service: the RTMP and SRT
//! servers ask the service whether a key may publish, and feed the publisher
//! they get.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;
use tokio_util::sync::CancellationToken;

use super::flv::FlvDepacketizer;
use super::rtmp::{CloseReason, MediaSink, PublishGate, Refusal, SinkError};
use super::segmenter::{AudioFrame, VideoFrame};
use super::service::{self, LiveService, Publisher};
use super::srt::{AccessUnitSink, SrtGate, SrtRefusal};

/// The live service as the RTMP server's gate.
pub struct RtmpGate(pub Arc<LiveService>);

#[async_trait::async_trait]
impl PublishGate for RtmpGate {
    async fn publish(&self, key: &str, peer: SocketAddr) -> Result<Box<dyn MediaSink>, Refusal> {
        match self.0.open_publisher(key, "rtmp").await {
            Ok(publisher) => {
                tracing::info!(stream_id = %publisher.stream_id(), %peer, "RTMP publisher accepted");
                Ok(Box::new(RtmpSink {
                    publisher,
                    flv: FlvDepacketizer::new(),
                }))
            }
            Err(service::Refusal::UnknownKey) => Err(Refusal::UnknownKey),
            Err(service::Refusal::AlreadyLive) => Err(Refusal::AlreadyLive),
            Err(service::Refusal::Unavailable) => Err(Refusal::Unavailable),
        }
    }
}

/// An RTMP publisher: FLV tag bodies become access units for the service.
struct RtmpSink {
    publisher: Publisher,
    flv: FlvDepacketizer,
}

impl RtmpSink {
    fn codecs(&mut self) {
        let (video, audio) = (self.flv.video_codec(), self.flv.audio_codec());
        self.publisher.set_codecs(video, audio);
        if let Some((w, h)) = self.flv.avc_config().and_then(|c| c.dimensions()) {
            self.publisher.metadata(Some(w), Some(h), None);
        }
    }
}

impl MediaSink for RtmpSink {
    fn metadata(&mut self, meta: &StreamMetadata) {
        self.publisher.metadata(
            meta.video_width,
            meta.video_height,
            meta.video_frame_rate.map(f64::from),
        );
    }

    fn video(&mut self, timestamp_ms: u32, body: Bytes) -> Result<(), SinkError> {
        let sequence_header = body.get(1) == Some(&0);
        let frame = self.flv.video(timestamp_ms, &body)?;
        if sequence_header {
            self.codecs();
        }
        if let Some(frame) = frame {
            self.publisher.video(frame);
        }
        Ok(())
    }

    fn audio(&mut self, timestamp_ms: u32, body: Bytes) -> Result<(), SinkError> {
        let sequence_header = body.get(1) == Some(&0);
        let frame = self.flv.audio(timestamp_ms, &body)?;
        if sequence_header {
            self.codecs();
        }
        if let Some(frame) = frame {
            self.publisher.audio(frame);
        }
        Ok(())
    }

    fn idle_timeout(&self) -> Option<Duration> {
        Some(self.publisher.idle_timeout())
    }

    fn close(self: Box<Self>, reason: CloseReason) {
        self.publisher.leave(reason.as_str());
    }

    fn kicked(&self) -> CancellationToken {
        self.publisher.kicked()
    }
}

/// The live service as the SRT server's gate.
pub struct SrtGateway(pub Arc<LiveService>);

#[async_trait::async_trait]
impl SrtGate for SrtGateway {
    async fn publish(
        &self,
        key: &str,
        peer: SocketAddr,
    ) -> Result<Box<dyn AccessUnitSink>, SrtRefusal> {
        match self.0.open_publisher(key, "srt").await {
            Ok(publisher) => {
                tracing::info!(stream_id = %publisher.stream_id(), %peer, "SRT publisher accepted");
                Ok(Box::new(SrtSink(publisher)))
            }
            Err(service::Refusal::UnknownKey) => Err(SrtRefusal::UnknownKey),
            Err(service::Refusal::AlreadyLive) => Err(SrtRefusal::AlreadyLive),
            Err(service::Refusal::Unavailable) => Err(SrtRefusal::Unavailable),
        }
    }
}

/// An SRT publisher: its transport stream is already demuxed to access units.
struct SrtSink(Publisher);

impl AccessUnitSink for SrtSink {
    fn codecs(&mut self, video: Option<String>, audio: Option<String>, size: Option<(u32, u32)>) {
        self.0.set_codecs(video, audio);
        if let Some((w, h)) = size {
            self.0.metadata(Some(w), Some(h), None);
        }
    }

    fn video(&mut self, frame: VideoFrame) {
        self.0.video(frame);
    }

    fn audio(&mut self, frame: AudioFrame) {
        self.0.audio(frame);
    }

    fn idle_timeout(&self) -> Duration {
        self.0.idle_timeout()
    }

    fn close(self: Box<Self>, reason: &'static str) {
        self.0.leave(reason);
    }

    fn kicked(&self) -> CancellationToken {
        self.0.kicked()
    }
}
