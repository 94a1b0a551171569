//! Deciding what to make from what came in: output sizes (short side, never
//! upscaled, even, square pixels), display rotation, a constant frame rate, colour
//! conversion for HDR, and audio. Pure functions, tested without GStreamer.

use serde::{Deserialize, Serialize};

use crate::media::probe::Probe;
use crate::media::timing::{STANDARD_RATES, snap};
use crate::presets::{H264Profile, Ladder, Rung};

/// Output formats of a transcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Mp4,
    Hls,
}

/// Display rotation applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    Identity,
    Clockwise90,
    Rotate180,
    CounterClockwise90,
    FlipHorizontal,
    FlipVertical,
    /// Transpose (flip + 90° clockwise).
    UpperLeftDiagonal,
    /// Transpose (flip + 270° clockwise).
    UpperRightDiagonal,
}

impl Orientation {
    fn from_probe(rotation: u32, flipped: bool) -> Orientation {
        match (rotation, flipped) {
            (90, false) => Orientation::Clockwise90,
            (180, false) => Orientation::Rotate180,
            (270, false) => Orientation::CounterClockwise90,
            (0, true) => Orientation::FlipHorizontal,
            (180, true) => Orientation::FlipVertical,
            (90, true) => Orientation::UpperLeftDiagonal,
            (270, true) => Orientation::UpperRightDiagonal,
            _ => Orientation::Identity,
        }
    }

    /// `videoflip`'s `method` nick.
    pub fn videoflip_method(self) -> &'static str {
        match self {
            Orientation::Identity => "none",
            Orientation::Clockwise90 => "clockwise",
            Orientation::Rotate180 => "rotate-180",
            Orientation::CounterClockwise90 => "counterclockwise",
            Orientation::FlipHorizontal => "horizontal-flip",
            Orientation::FlipVertical => "vertical-flip",
            Orientation::UpperLeftDiagonal => "upper-left-diagonal",
            Orientation::UpperRightDiagonal => "upper-right-diagonal",
        }
    }

    fn swaps_axes(self) -> bool {
        matches!(
            self,
            Orientation::Clockwise90
                | Orientation::CounterClockwise90
                | Orientation::UpperLeftDiagonal
                | Orientation::UpperRightDiagonal
        )
    }
}

/// One output size with its encoder settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RungPlan {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
    pub profile: H264Profile,
    pub level: String,
}

/// How the decoded picture's colours become 8-bit BT.709.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorPlan {
    /// 8-bit BT.709 (or BT.601) already: nothing to do.
    Passthrough,
    /// 10-bit or BT.2020 SDR, and HLG: convert matrix, primaries and depth. HLG is
    /// made to look right on SDR displays as it is, so its transfer is kept.
    Convert,
    /// PQ (SMPTE ST 2084): also remap the transfer function to BT.709 (highlights
    /// above SDR white clip; there is no dynamic tone mapping).
    ConvertPq,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VideoPlan {
    pub orientation: Orientation,
    /// The input's pixel aspect, as the probe found it (decoders may announce
    /// another; the pipeline corrects them).
    pub pixel_aspect: (u32, u32),
    /// How much later than the decoder says the pictures are shown (see
    /// `Probe::video_start_s`), in nanoseconds.
    pub video_delay_ns: u64,
    /// Where the video's last picture ends (`Probe::video_end_s`, plus the
    /// delay), in nanoseconds: it is held until then.
    pub end_ns: Option<u64>,
    /// Constant output frame rate.
    pub fps_n: i32,
    pub fps_d: i32,
    pub gop_frames: u32,
    pub color: ColorPlan,
    pub x264_preset: String,
    pub rungs: Vec<RungPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioPlan {
    pub bitrate: u32,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    pub rung: String,
    /// `above_source`: the rung is larger than the input and would be upscaled.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub video: VideoPlan,
    pub audio: Option<AudioPlan>,
    pub formats: Vec<Format>,
    pub segment_s: f64,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the input has no video stream")]
    NoVideo,
}

/// A constant output rate for a (possibly variable) source rate, capped at `max`.
pub fn output_fps(source: Option<f64>, max: u32) -> (i32, i32) {
    let max_f = f64::from(max);
    let Some(src) = source.filter(|f| f.is_finite() && *f > 0.0) else {
        return (max as i32, 1);
    };
    let rate = |(n, d): &(i32, i32)| f64::from(*n) / f64::from(*d);
    // A standard rate at or under the cap is kept exactly (29.97 stays
    // 30000/1001 under a cap of 30); anything at or over the cap is the cap.
    if let Some(standard) = snap(src).filter(|r| rate(r) <= max_f) {
        return standard;
    }
    if src >= max_f * 0.985 {
        return (max as i32, 1);
    }
    // An average a little under a standard rate (a 30 fps phone clip that
    // dropped frames averages 28) goes to the next standard rate; very low
    // rates (screen recordings) keep their own.
    if src >= 20.0 {
        return STANDARD_RATES
            .iter()
            .find(|r| rate(r) > src && rate(r) <= max_f)
            .copied()
            .unwrap_or((max as i32, 1));
    }
    ((src.round() as i32).max(1), 1)
}

/// The smallest picture side x264enc takes: smaller sources are scaled up to it
/// on their short side (the one case where the node upscales).
pub const MIN_SIDE: u32 = 16;

/// The source's display size made even, or scaled up to [`MIN_SIDE`] on the
/// short side when smaller.
fn source_size(dw: f64, dh: f64) -> (u32, u32) {
    let short = dw.min(dh);
    if short < f64::from(MIN_SIDE) {
        let scale = f64::from(MIN_SIDE) / short;
        return (
            even_round(dw * scale).max(MIN_SIDE),
            even_round(dh * scale).max(MIN_SIDE),
        );
    }
    (even_floor(dw.round() as u32), even_floor(dh.round() as u32))
}

fn even_round(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

fn even_floor(x: u32) -> u32 {
    (x / 2 * 2).max(2)
}

/// Width and height as displayed: pixel aspect applied, then rotation.
pub fn display_size(probe: &Probe, orientation: Orientation) -> Option<(f64, f64)> {
    let (w, h) = (probe.width? as f64, probe.height? as f64);
    let par = pixel_aspect_of(probe);
    let w = w * f64::from(par.0) / f64::from(par.1);
    Some(if orientation.swaps_axes() {
        (h, w)
    } else {
        (w, h)
    })
}

/// The first video stream's pixel aspect (`n:d` in the probe), 1:1 when unknown.
pub fn pixel_aspect_of(probe: &Probe) -> (u32, u32) {
    probe
        .streams
        .iter()
        .find(|s| s.kind == "video")
        .and_then(|v| v.pixel_aspect.as_deref())
        .and_then(|p| p.split_once(':'))
        .and_then(|(n, d)| Some((n.parse::<u32>().ok()?, d.parse::<u32>().ok()?)))
        .filter(|(n, d)| *n > 0 && *d > 0)
        .unwrap_or((1, 1))
}

/// The display orientation a probe describes.
pub fn orientation_of(probe: &Probe) -> Orientation {
    Orientation::from_probe(probe.rotation, probe.flipped)
}

/// GStreamer colorimetry is a name (`bt709`, `bt2100-pq`) or
/// `range:matrix:transfer:primaries` numbers (transfer 14 = PQ, 15 = HLG).
pub fn color_plan(probe: &Probe) -> ColorPlan {
    let Some(video) = probe.streams.iter().find(|s| s.kind == "video") else {
        return ColorPlan::Passthrough;
    };
    let c = video.colorimetry.as_deref().unwrap_or("");
    let transfer = c.split(':').nth(2);
    if c.contains("pq") || c.contains("smpte2084") || transfer == Some("14") {
        return ColorPlan::ConvertPq;
    }
    let wide = c.contains("2100")
        || c.contains("2020")
        || c.contains("b67")
        || transfer == Some("15")
        || c.split(':').nth(3) == Some("9");
    if wide || video.bit_depth.is_some_and(|d| d > 8) {
        ColorPlan::Convert
    } else {
        ColorPlan::Passthrough
    }
}

/// Plans a transcode of `probe`d input with `ladder`, limited to `rung_names` when
/// given (validated by the caller against the ladder).
pub fn plan(
    probe: &Probe,
    ladder: &Ladder,
    rung_names: Option<&[String]>,
    formats: &[Format],
) -> Result<Plan, PlanError> {
    let orientation = Orientation::from_probe(probe.rotation, probe.flipped);
    let (dw, dh) = display_size(probe, orientation).ok_or(PlanError::NoVideo)?;
    let short = dw.min(dh);

    let chosen: Vec<&Rung> = ladder
        .rungs
        .iter()
        .filter(|r| rung_names.is_none_or(|names| names.iter().any(|n| n == &r.name)))
        .collect();
    let mut rungs = Vec::new();
    let mut skipped = Vec::new();
    for rung in &chosen {
        if f64::from(rung.short_side) > short {
            skipped.push(Skipped {
                rung: rung.name.clone(),
                reason: "above_source".into(),
            });
            continue;
        }
        let scale = f64::from(rung.short_side) / short;
        rungs.push(RungPlan {
            name: rung.name.clone(),
            width: even_round(dw * scale),
            height: even_round(dh * scale),
            video_kbps: rung.video_kbps,
            profile: rung.profile,
            level: rung.level.clone(),
        });
    }
    if rungs.is_empty() {
        // Every rung would upscale: one rendition at the source size, with the
        // settings of the smallest rung asked for.
        let lowest = chosen
            .last()
            .copied()
            .unwrap_or_else(|| ladder.rungs.last().expect("ladders have at least one rung"));
        let (width, height) = source_size(dw, dh);
        rungs.push(RungPlan {
            name: format!("{}p", width.min(height)),
            width,
            height,
            video_kbps: lowest.video_kbps,
            profile: lowest.profile,
            level: lowest.level.clone(),
        });
    }

    let (fps_n, fps_d) = output_fps(probe.fps, ladder.max_fps);
    let fps = f64::from(fps_n) / f64::from(fps_d);
    let has_audio = probe.streams.iter().any(|s| s.kind == "audio");
    let mut formats = formats.to_vec();
    formats.dedup();
    Ok(Plan {
        video: VideoPlan {
            orientation,
            pixel_aspect: pixel_aspect_of(probe),
            video_delay_ns: probe.video_start_s.map_or(0, |s| (s * 1e9).round() as u64),
            end_ns: probe
                .video_end_s
                .map(|e| ((e + probe.video_start_s.unwrap_or(0.0)) * 1e9).round() as u64),
            fps_n,
            fps_d,
            gop_frames: ladder.gop_frames(fps),
            color: color_plan(probe),
            x264_preset: ladder.x264_preset.clone(),
            rungs,
        },
        audio: has_audio.then(|| AudioPlan {
            bitrate: ladder.audio.bitrate_kbps * 1000,
            sample_rate: ladder.audio.sample_rate,
            channels: ladder.audio.channels,
        }),
        formats,
        segment_s: ladder.segment_s,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::probe::StreamProbe;
    use crate::presets::Presets;

    fn probe(w: u32, h: u32, rotation: u32, fps: Option<f64>, audio: bool) -> Probe {
        let mut streams = vec![StreamProbe {
            kind: "video".into(),
            selected: false,
            codec: Some("h264".into()),
            width: Some(w),
            height: Some(h),
            fps,
            pixel_aspect: Some("1:1".into()),
            bit_depth: Some(8),
            colorimetry: Some("bt709".into()),
            channels: None,
            sample_rate: None,
            bitrate: None,
        }];
        if audio {
            streams.push(StreamProbe {
                kind: "audio".into(),
                selected: false,
                codec: Some("aac".into()),
                width: None,
                height: None,
                fps: None,
                pixel_aspect: None,
                bit_depth: None,
                colorimetry: None,
                channels: Some(6),
                sample_rate: Some(48000),
                bitrate: None,
            });
        }
        Probe {
            container: "mp4".into(),
            mime: "video/quicktime".into(),
            size_bytes: 1,
            duration_s: 2.0,
            width: Some(w),
            height: Some(h),
            display_width: None,
            display_height: None,
            presentation_width: None,
            presentation_height: None,
            rotation,
            flipped: false,
            fps,
            mean_fps: None,
            declared_fps: None,
            variable_frame_rate: false,
            video_start_s: None,
            video_end_s: None,
            video_codec: Some("h264".into()),
            audio_codec: audio.then(|| "aac".into()),
            bitrate: None,
            streams,
            unread_video: None,
        }
    }

    #[test]
    fn pictures_under_16_px_are_scaled_up_to_it() {
        let p = plan(
            &probe(10, 12, 0, Some(25.0), false),
            &ladder(),
            None,
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(sizes(&p), [("16p".to_string(), 16, 20)]);
        let p = plan(
            &probe(2, 2, 0, Some(25.0), false),
            &ladder(),
            None,
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(sizes(&p), [("16p".to_string(), 16, 16)]);
        let p = plan(
            &probe(102, 60, 0, Some(25.0), false),
            &ladder(),
            None,
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(sizes(&p), [("60p".to_string(), 102, 60)]);
    }

    fn ladder() -> Ladder {
        Presets::builtin()
            .unwrap()
            .ladder("default")
            .unwrap()
            .clone()
    }

    fn sizes(plan: &Plan) -> Vec<(String, u32, u32)> {
        plan.video
            .rungs
            .iter()
            .map(|r| (r.name.clone(), r.width, r.height))
            .collect()
    }

    #[test]
    fn landscape_1080p_gets_the_whole_ladder() {
        let p = plan(
            &probe(1920, 1080, 0, Some(50.0), true),
            &ladder(),
            None,
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(
            sizes(&p),
            [
                ("1080p".into(), 1920, 1080),
                ("720p".into(), 1280, 720),
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360)
            ]
        );
        assert!(p.skipped.is_empty());
        assert_eq!((p.video.fps_n, p.video.fps_d), (30, 1));
        assert_eq!(p.video.gop_frames, 60);
        assert_eq!(p.audio.as_ref().unwrap().channels, 2);
    }

    #[test]
    fn rotated_portrait_stays_portrait() {
        let p = plan(
            &probe(1920, 1080, 90, Some(24.0), true),
            &ladder(),
            None,
            &[Format::Hls],
        )
        .unwrap();
        assert_eq!(p.video.orientation, Orientation::Clockwise90);
        assert_eq!(sizes(&p)[1], ("720p".into(), 720, 1280));
        assert_eq!((p.video.fps_n, p.video.fps_d), (24, 1));
    }

    #[test]
    fn never_upscale_and_report_skips() {
        let p = plan(
            &probe(640, 360, 0, Some(30.0), false),
            &ladder(),
            None,
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(sizes(&p), [("360p".into(), 640, 360)]);
        let skipped: Vec<&str> = p.skipped.iter().map(|s| s.rung.as_str()).collect();
        assert_eq!(skipped, ["1080p", "720p", "480p"]);
        assert!(p.audio.is_none());
    }

    #[test]
    fn tiny_sources_get_one_rendition_at_source_size() {
        let p = plan(
            &probe(161, 121, 0, Some(30.0), true),
            &ladder(),
            None,
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(sizes(&p), [("120p".into(), 160, 120)]);
        assert_eq!(
            p.video.rungs[0].video_kbps, 700,
            "settings of the lowest rung"
        );
        assert_eq!(p.skipped.len(), 4);
    }

    #[test]
    fn a_subset_of_rungs() {
        let names = vec!["720p".to_string()];
        let p = plan(
            &probe(1920, 1080, 0, None, true),
            &ladder(),
            Some(&names),
            &[Format::Mp4],
        )
        .unwrap();
        assert_eq!(sizes(&p), [("720p".into(), 1280, 720)]);
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn odd_sizes_and_pixel_aspect() {
        let mut pr = probe(3026, 1386, 0, Some(7.22), false);
        let p = plan(&pr, &ladder(), None, &[Format::Mp4]).unwrap();
        assert_eq!(sizes(&p)[0], ("1080p".into(), 2358, 1080));
        assert_eq!((p.video.fps_n, p.video.fps_d), (7, 1));
        // Anamorphic 1440x1080 at 4:3 pixels displays as 1920x1080.
        pr = probe(1440, 1080, 0, Some(25.0), false);
        pr.streams[0].pixel_aspect = Some("4:3".into());
        let p = plan(&pr, &ladder(), None, &[Format::Mp4]).unwrap();
        assert_eq!(sizes(&p)[0], ("1080p".into(), 1920, 1080));
    }

    #[test]
    fn frame_rates_become_constant_and_capped() {
        assert_eq!(output_fps(Some(29.97), 30), (30000, 1001));
        assert_eq!(output_fps(Some(59.94), 30), (30, 1));
        assert_eq!(output_fps(Some(23.976), 30), (24000, 1001));
        assert_eq!(output_fps(Some(25.0), 30), (25, 1));
        assert_eq!(output_fps(Some(24.0), 30), (24, 1));
        assert_eq!(output_fps(Some(28.03), 30), (30000, 1001));
        assert_eq!(output_fps(Some(28.03), 60), (30000, 1001));
        assert_eq!(output_fps(Some(7.22), 30), (7, 1));
        assert_eq!(output_fps(Some(59.94), 60), (60000, 1001));
        assert_eq!(output_fps(None, 30), (30, 1));
    }

    #[test]
    fn hdr_sources_are_converted() {
        let mut pr = probe(1920, 1080, 90, Some(28.0), true);
        pr.streams[0].bit_depth = Some(10);
        pr.streams[0].colorimetry = Some("bt2100-hlg".into());
        let p = plan(&pr, &ladder(), None, &[Format::Mp4]).unwrap();
        assert_eq!(p.video.color, ColorPlan::Convert);
        pr.streams[0].colorimetry = Some("bt2100-pq".into());
        assert_eq!(
            plan(&pr, &ladder(), None, &[Format::Mp4])
                .unwrap()
                .video
                .color,
            ColorPlan::ConvertPq
        );
        pr.streams[0].colorimetry = Some("2:3:14:9".into());
        assert_eq!(
            plan(&pr, &ladder(), None, &[Format::Mp4])
                .unwrap()
                .video
                .color,
            ColorPlan::ConvertPq
        );
        pr.streams[0].bit_depth = Some(8);
        pr.streams[0].colorimetry = Some("bt709".into());
        assert_eq!(
            plan(&pr, &ladder(), None, &[Format::Mp4])
                .unwrap()
                .video
                .color,
            ColorPlan::Passthrough
        );
    }
}
