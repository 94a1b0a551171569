//! Glue between the ingest servers and the live service: the RTMP server asks
//! the service whether a key may publish, and feeds the publisher it gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;
use tokio_util::sync::CancellationToken;

use super::rtmp::{CloseReason, MediaSink, PublishGate, Refusal, SinkError};
use super::service::{self, LiveService, Publisher};

/// The live service as the RTMP server's gate.
pub struct RtmpGate(pub Arc<LiveService>);

#[async_trait::async_trait]
impl PublishGate for RtmpGate {
    async fn publish(&self, key: &str, peer: SocketAddr) -> Result<Box<dyn MediaSink>, Refusal> {
        match self.0.open_publisher(key, "rtmp").await {
            Ok(publisher) => {
                tracing::info!(stream_id = %publisher.stream_id(), %peer, "RTMP publisher accepted");
                Ok(Box::new(RtmpSink(publisher)))
            }
            Err(service::Refusal::UnknownKey) => Err(Refusal::UnknownKey),
            Err(service::Refusal::AlreadyLive) => Err(Refusal::AlreadyLive),
            Err(service::Refusal::Unavailable) => Err(Refusal::Unavailable),
        }
    }
}

struct RtmpSink(Publisher);

impl MediaSink for RtmpSink {
    fn metadata(&mut self, meta: &StreamMetadata) {
        self.0.metadata(
            meta.video_width,
            meta.video_height,
            meta.video_frame_rate.map(f64::from),
        );
    }

    fn video(&mut self, timestamp_ms: u32, body: Bytes) -> Result<(), SinkError> {
        Ok(self.0.flv_video(timestamp_ms, &body)?)
    }

    fn audio(&mut self, timestamp_ms: u32, body: Bytes) -> Result<(), SinkError> {
        Ok(self.0.flv_audio(timestamp_ms, &body)?)
    }

    fn idle_timeout(&self) -> Option<Duration> {
        Some(self.0.idle_timeout())
    }

    fn close(self: Box<Self>, reason: CloseReason) {
        self.0.leave(reason.as_str());
    }

    fn kicked(&self) -> CancellationToken {
        self.0.kicked()
    }
}
