//! The master playlists of streams whose profile transcodes: the live one
//! once renditions have stored segments, the replay's after every track's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::{Active, LiveService};
use crate::live::Track;
use crate::live::relay::{LIVE_PLAYLIST_CACHE, REPLAY_CACHE, Relay, StreamKeys};
use crate::presets::live::SOURCE_RENDITION;

impl LiveService {
    /// Writes the live master playlist of a transcoding stream once its
    /// renditions have stored segments (and again when one more has), so it
    /// never lists a variant whose playlist is missing.
    pub(super) fn spawn_live_master(&self, active: &Arc<Active>) {
        let me = self.me.clone();
        let active = Arc::downgrade(active);
        tokio::spawn(async move {
            let mut written = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let (Some(service), Some(active)) = (me.upgrade(), active.upgrade()) else {
                    return;
                };
                if active.ended.load(Ordering::Acquire) || active.fence.is_lost() {
                    return;
                }
                if !active.fence.holds() {
                    continue;
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
    pub(super) async fn write_replay_master(&self, active: &Active) {
        // Only the stream's holder writes it; a lease unconfirmed for now
        // (the database is slow) is waited for.
        while !active.fence.holds() {
            if active.fence.is_lost() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
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
                    owner: None,
                },
            )
            .await
    }
}
