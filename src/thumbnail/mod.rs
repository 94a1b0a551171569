//! Stills: posters, thumbnails at several sizes, storyboards, from videos and
//! product photos. Resizing with `fast_image_resize` (SIMD picked at run time) is
//! the hot path.
//!
//! - [`spec`]: what a job asks for, presets applied;
//! - [`still`]: photo inputs (header-checked, shrink-on-load, oriented, sRGB);
//! - [`frames`]: video frames from one decoding pipeline (seeks, or one pass);
//! - [`poster`]: the smart `auto` poster;
//! - [`storyboard`]: sprite sheets and their WebVTT index;
//! - [`resize`], [`yuv`], [`encode`]: pixels to files.
//!
//! All pixel work is CPU-bound and runs on the blocking pool, at most one job per
//! core at a time ([`PERMITS`]): a large job uses every core (the JPEG decoder is
//! multi-threaded), many small jobs queue instead of thrashing.

pub mod encode;
pub mod frames;
pub mod poster;
pub mod resize;
mod skip;
pub mod spec;
pub mod still;
pub mod storyboard;
pub mod tap;
pub mod yuv;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use self::encode::{StillFormat, encode};
use self::frames::{Frame, FrameGrabber, SeekMode};
use self::resize::{Size, geometry, resize};
use self::spec::{Resolved, StoryboardSpec, Time};
use self::still::{StillError, StillLimits};
use crate::media::MediaError;
use crate::media::probe::Probe;
use crate::media::transcode::plan::{color_plan, orientation_of, pixel_aspect_of};
use crate::output::{FileKind, ProducedFile, join_key};

/// Stills jobs running at once on this node.
pub static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    )
});

/// Poster candidates scored per video.
const POSTER_CANDIDATES: usize = 12;
/// Keyframe seeks are only used when keyframes land this close to the wanted time
/// (as a fraction of the storyboard interval).
const KEYFRAME_SLACK: f64 = 0.5;

/// One entry of `result.outputs` for stills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StillOutput {
    Thumbnail(StillEntry),
    Poster(StillEntry),
    Storyboard(SheetEntry),
    StoryboardVtt(VttEntry),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StillEntry {
    pub key: String,
    /// Time of the frame in the video (absent for photos).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_s: Option<f64>,
    pub width: u32,
    pub height: u32,
    pub format: StillFormat,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SheetEntry {
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub tiles: usize,
    pub format: StillFormat,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VttEntry {
    pub key: String,
    pub tiles: usize,
    pub interval_s: f64,
    pub bytes: u64,
}

/// What a stills job produced.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    pub files: Vec<ProducedFile>,
    pub outputs: Vec<StillOutput>,
    pub poster_time_s: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StillsError {
    #[error(transparent)]
    Still(#[from] StillError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("a storyboard needs a video input")]
    StoryboardNeedsVideo,
    #[error("writing stills: {0}")]
    Io(String),
    #[error("canceled")]
    Canceled,
}

/// What the stills step needs besides the spec.
pub struct Request<'a> {
    pub input: &'a Path,
    /// The probe of a video input (None for photos).
    pub probe: Option<&'a Probe>,
    pub thumbnails: Option<&'a Resolved>,
    pub storyboard: Option<&'a StoryboardSpec>,
    /// Windows to prefer for the `auto` poster (e.g. where shoppable tags show).
    pub poster_windows: Vec<(f64, f64)>,
    pub limits: StillLimits,
    pub work_dir: &'a Path,
    pub prefix: &'a str,
    pub cancel: &'a CancellationToken,
    pub progress: &'a (dyn Fn(f64) + Send + Sync),
}

/// Whether the file at `path` is a photo (JPEG, PNG, WebP) rather than a video.
pub fn is_photo(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()
        .and_then(|n| still::sniff(&head[..n]))
        .is_some()
}

/// Makes every still asked for. Blocking: run it on the blocking pool.
pub fn make(req: &Request) -> Result<Produced, StillsError> {
    let mut writer = Writer::new(req)?;
    match req.probe {
        None => {
            if req.storyboard.is_some() {
                return Err(StillsError::StoryboardNeedsVideo);
            }
            if let Some(t) = req.thumbnails {
                photo(req, t, &mut writer)?;
            }
        }
        Some(probe) => video(req, probe, &mut writer)?,
    }
    Ok(writer.produced)
}

struct Writer<'a> {
    out_dir: PathBuf,
    prefix: &'a str,
    produced: Produced,
}

impl<'a> Writer<'a> {
    /// Writes below the job's work dir, keys below its prefix.
    fn new(req: &Request<'a>) -> Result<Writer<'a>, StillsError> {
        let out_dir = req.work_dir.join("stills");
        std::fs::create_dir_all(&out_dir).map_err(|e| StillsError::Io(e.to_string()))?;
        Ok(Writer {
            out_dir,
            prefix: req.prefix,
            produced: Produced::default(),
        })
    }

    fn write(
        &mut self,
        rel: &str,
        data: &[u8],
        kind: FileKind,
    ) -> Result<(String, u64), StillsError> {
        let path = self.out_dir.join(rel.replace('/', "__"));
        std::fs::write(&path, data).map_err(|e| StillsError::Io(e.to_string()))?;
        self.produced.files.push(ProducedFile {
            rel_key: rel.to_string(),
            path,
            kind,
        });
        Ok((join_key(self.prefix, rel), data.len() as u64))
    }

    /// Encodes one resized RGB(A) picture in every format.
    #[allow(clippy::too_many_arguments)]
    fn stills(
        &mut self,
        t: &Resolved,
        pixels: &[u8],
        width: u32,
        height: u32,
        channels: u8,
        dir: &str,
        size: &Size,
        time_s: Option<f64>,
        poster: bool,
    ) -> Result<(), StillsError> {
        for format in &t.formats {
            let quality = match format {
                StillFormat::Jpeg => t.jpeg_quality,
                StillFormat::Webp => t.webp_quality,
            };
            let data = encode(
                pixels,
                width,
                height,
                channels,
                *format,
                quality,
                t.background,
            )
            .map_err(StillsError::Io)?;
            let rel = format!("thumbs/{dir}/{}.{}", size.label(), format.extension());
            let (key, bytes) = self.write(&rel, &data, FileKind::Media)?;
            let entry = StillEntry {
                key,
                time_s: time_s.map(|t| (t * 1000.0).round() / 1000.0),
                width,
                height,
                format: *format,
                bytes,
            };
            self.produced.outputs.push(if poster {
                StillOutput::Poster(entry)
            } else {
                StillOutput::Thumbnail(entry)
            });
        }
        Ok(())
    }
}

fn photo(req: &Request, t: &Resolved, writer: &mut Writer) -> Result<(), StillsError> {
    let picture = still::load(req.input, &req.limits, &t.sizes)?;
    for (i, size) in t.sizes.iter().enumerate() {
        if req.cancel.is_cancelled() {
            return Err(StillsError::Canceled);
        }
        let g = geometry(picture.width, picture.height, *size);
        let pixels = resize(
            &picture.data,
            picture.width,
            picture.height,
            picture.channels,
            &g,
            t.filter,
        )
        .map_err(StillsError::Io)?;
        writer.stills(
            t,
            &pixels,
            g.width,
            g.height,
            picture.channels,
            "image",
            size,
            None,
            false,
        )?;
        (req.progress)((i + 1) as f64 / t.sizes.len() as f64);
    }
    Ok(())
}

fn time_label(t: &Time) -> String {
    match t {
        Time::Auto => "auto".into(),
        Time::Seconds(s) => format!("t{s:.3}"),
        Time::Percent(p) => format!("p{p}"),
    }
}

fn video(req: &Request, probe: &Probe, writer: &mut Writer) -> Result<(), StillsError> {
    let plan_orientation = orientation_of(probe);
    let color = color_plan(probe);
    let duration = probe.pictures_s();
    let grabber = FrameGrabber::open(
        req.input,
        plan_orientation,
        pixel_aspect_of(probe),
        color,
        duration,
    )?;
    let check = || {
        if req.cancel.is_cancelled() {
            Err(StillsError::Canceled)
        } else {
            Ok(())
        }
    };

    // Frames wanted, each with what it is for. Those that cannot come from a
    // cheap seek are collected for one linear pass at the end.
    let mut pending: Vec<(f64, Purpose)> = Vec::new();
    let thumbs = req.thumbnails;
    let total_steps =
        thumbs.map(|t| t.times.len()).unwrap_or(0) + req.storyboard.map(|_| 1).unwrap_or(0);
    let mut done_steps = 0usize;
    let mut step = |_: ()| {
        done_steps += 1;
        (req.progress)(done_steps as f64 / total_steps.max(1) as f64);
    };

    if let Some(t) = thumbs {
        for time in &t.times {
            check()?;
            match time {
                Time::Auto => {
                    let candidates =
                        poster::candidate_times(duration, POSTER_CANDIDATES, &req.poster_windows);
                    let mut frames = Vec::new();
                    for c in &candidates {
                        frames.push(grabber.frame_at(*c, SeekMode::Keyframe)?);
                    }
                    let mut distinct: Vec<i64> =
                        frames.iter().map(|f| (f.time_s * 1000.0) as i64).collect();
                    distinct.sort_unstable();
                    distinct.dedup();
                    if distinct.len() * 2 < candidates.len().min(8) {
                        // Keyframes too sparse to choose from: decode and look.
                        for c in candidates {
                            pending.push((c, Purpose::PosterCandidate));
                        }
                    } else {
                        let chosen = pick(&frames);
                        emit_frame(writer, t, &frames[chosen], "auto", true)?;
                        writer.produced.poster_time_s = Some(frames[chosen].time_s);
                    }
                }
                other => {
                    let secs = match other {
                        Time::Seconds(s) => s.min(duration),
                        Time::Percent(p) => duration * p / 100.0,
                        Time::Auto => unreachable!(),
                    };
                    let frame = grabber.frame_at(secs, SeekMode::Accurate)?;
                    emit_frame(writer, t, &frame, &time_label(other), false)?;
                }
            }
            step(());
        }
    }

    let mut sheets: Option<Sheets> = None;
    if let Some(sb) = req.storyboard {
        let first = grabber.frame_at(0.0, SeekMode::Keyframe)?;
        let (shown_w, shown_h) = first.display_size();
        let layout = storyboard::Layout::new(
            duration,
            sb.interval_s,
            shown_w,
            shown_h,
            sb.tile_width,
            sb.columns,
            sb.rows,
        );
        let mut s = Sheets::new(layout);
        // Keyframes are enough when they land near every tile's time; try the first
        // few, and fall back to decoding every frame once when they do not.
        let probe_tiles = s.layout.times.len().min(3);
        let mut by_keyframe = true;
        let mut first_tiles = Vec::new();
        for i in 0..probe_tiles {
            let t = s.layout.times[i];
            let f = grabber.frame_at(t, SeekMode::Keyframe)?;
            if (f.time_s - t).abs() > sb.interval_s * KEYFRAME_SLACK {
                by_keyframe = false;
                break;
            }
            first_tiles.push(f);
        }
        if by_keyframe {
            for (i, f) in first_tiles.iter().enumerate() {
                s.place(i, f)?;
            }
            for i in probe_tiles..s.layout.times.len() {
                check()?;
                let f = grabber.frame_at(s.layout.times[i], SeekMode::Keyframe)?;
                s.place(i, &f)?;
            }
        } else {
            for (i, t) in s.layout.times.iter().enumerate() {
                pending.push((*t, Purpose::Tile(i)));
            }
        }
        sheets = Some(s);
    }

    if !pending.is_empty() {
        pending.sort_by(|a, b| a.0.total_cmp(&b.0));
        let times: Vec<f64> = pending.iter().map(|p| p.0).collect();
        let mut candidates: Vec<Frame> = Vec::new();
        grabber
            .scan(&times, |i, frame| {
                if req.cancel.is_cancelled() {
                    return Err(MediaError::Internal("canceled".into()));
                }
                match pending[i].1 {
                    Purpose::PosterCandidate => candidates.push(frame),
                    Purpose::Tile(n) => {
                        if let Some(s) = sheets.as_mut() {
                            s.place(n, &frame)
                                .map_err(|e| MediaError::Internal(e.to_string()))?;
                        }
                    }
                    // Exact times are seeked to, never scanned for.
                    Purpose::Still(_) => {}
                }
                Ok(())
            })
            .map_err(|e| {
                if req.cancel.is_cancelled() {
                    StillsError::Canceled
                } else {
                    e.into()
                }
            })?;
        if !candidates.is_empty()
            && let Some(t) = thumbs
        {
            let chosen = pick(&candidates);
            emit_frame(writer, t, &candidates[chosen], "auto", true)?;
            writer.produced.poster_time_s = Some(candidates[chosen].time_s);
        }
    } else {
        drop(grabber);
    }

    if let (Some(s), Some(sb)) = (sheets, req.storyboard) {
        s.finish(writer, sb, duration)?;
        step(());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    PosterCandidate,
    Tile(usize),
    /// `thumbnails.times[n]` (not `auto`).
    Still(usize),
}

/// The frames a video's stills need when they come from a decode that runs
/// anyway (the transcode's, see [`tap`]): the wanted times, sorted, and what
/// each is for.
pub struct Captures {
    pub times: Vec<f64>,
    purposes: Vec<Purpose>,
}

/// Plans the captures for thumbnails and a storyboard on a video lasting
/// `duration_s`, poster candidates inside `poster_windows` when there are any.
pub fn captures(
    thumbnails: Option<&Resolved>,
    storyboard: Option<&StoryboardSpec>,
    poster_windows: &[(f64, f64)],
    duration_s: f64,
) -> Captures {
    // A time at or past the end would find no frame.
    let last = (duration_s - 0.05).max(0.0);
    let mut wanted: Vec<(f64, Purpose)> = Vec::new();
    if let Some(t) = thumbnails {
        for (n, time) in t.times.iter().enumerate() {
            match time {
                Time::Auto => {
                    for c in poster::candidate_times(duration_s, POSTER_CANDIDATES, poster_windows)
                    {
                        wanted.push((c.min(last), Purpose::PosterCandidate));
                    }
                }
                Time::Seconds(s) => wanted.push((s.min(last), Purpose::Still(n))),
                Time::Percent(p) => {
                    wanted.push(((duration_s * p / 100.0).min(last), Purpose::Still(n)))
                }
            }
        }
    }
    if let Some(sb) = storyboard {
        for (i, t) in storyboard::tile_times(duration_s, sb.interval_s)
            .into_iter()
            .enumerate()
        {
            wanted.push((t.min(last), Purpose::Tile(i)));
        }
    }
    wanted.sort_by(|a, b| a.0.total_cmp(&b.0));
    Captures {
        times: wanted.iter().map(|w| w.0).collect(),
        purposes: wanted.into_iter().map(|w| w.1).collect(),
    }
}

/// Makes a video's stills from captured frames (`(index into captures.times,
/// frame)`, until the sender is dropped); times the capture missed are fetched
/// by seeking. Blocking: run it on the blocking pool.
pub fn make_from_frames(
    req: &Request,
    probe: &Probe,
    captures: &Captures,
    frames: std::sync::mpsc::Receiver<(usize, Frame)>,
) -> Result<Produced, StillsError> {
    let mut writer = Writer::new(req)?;
    let duration = probe.pictures_s();
    let mut candidates: Vec<Frame> = Vec::new();
    let mut sheets: Option<Sheets> = None;
    let mut handle = |i: usize, frame: Frame, writer: &mut Writer| -> Result<(), StillsError> {
        match captures.purposes[i] {
            Purpose::PosterCandidate => candidates.push(frame),
            Purpose::Still(n) => {
                if let Some(t) = req.thumbnails {
                    emit_frame(writer, t, &frame, &time_label(&t.times[n]), false)?;
                }
            }
            Purpose::Tile(n) => {
                if let Some(sb) = req.storyboard {
                    let s = sheets.get_or_insert_with(|| {
                        Sheets::new(storyboard::Layout::new(
                            duration,
                            sb.interval_s,
                            frame.display_size().0,
                            frame.display_size().1,
                            sb.tile_width,
                            sb.columns,
                            sb.rows,
                        ))
                    });
                    s.place(n, &frame)?;
                }
            }
        }
        Ok(())
    };
    let mut got = vec![false; captures.times.len()];
    loop {
        // Wake up now and then: a transcode that fails or is canceled may not
        // drop its end of the channel at once.
        let (i, frame) = match frames.recv_timeout(std::time::Duration::from_millis(250)) {
            Ok(next) => next,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if req.cancel.is_cancelled() {
                    return Err(StillsError::Canceled);
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if req.cancel.is_cancelled() {
            return Err(StillsError::Canceled);
        }
        if i < got.len() && !got[i] {
            got[i] = true;
            handle(i, frame, &mut writer)?;
        }
    }
    if req.cancel.is_cancelled() {
        return Err(StillsError::Canceled);
    }
    let missing: Vec<usize> = (0..got.len()).filter(|i| !got[*i]).collect();
    tracing::info!(
        tapped = got.len() - missing.len(),
        missed = missing.len(),
        "stills from the transcode's decode"
    );
    if !missing.is_empty() {
        let grabber = FrameGrabber::open(
            req.input,
            orientation_of(probe),
            pixel_aspect_of(probe),
            color_plan(probe),
            duration,
        )?;
        for i in missing {
            let mode = match captures.purposes[i] {
                Purpose::Still(_) => SeekMode::Accurate,
                _ => SeekMode::Keyframe,
            };
            let frame = grabber.frame_at(captures.times[i], mode)?;
            handle(i, frame, &mut writer)?;
        }
    }
    if !candidates.is_empty()
        && let Some(t) = req.thumbnails
    {
        let chosen = pick(&candidates);
        emit_frame(&mut writer, t, &candidates[chosen], "auto", true)?;
        writer.produced.poster_time_s = Some(candidates[chosen].time_s);
    }
    if let (Some(s), Some(sb)) = (sheets, req.storyboard) {
        s.finish(&mut writer, sb, duration)?;
    }
    Ok(writer.produced)
}

fn pick(frames: &[Frame]) -> usize {
    let scores: Vec<poster::Score> = frames.iter().map(poster::score).collect();
    poster::best(&scores).unwrap_or(0)
}

fn emit_frame(
    writer: &mut Writer,
    t: &Resolved,
    frame: &Frame,
    dir: &str,
    poster: bool,
) -> Result<(), StillsError> {
    for size in &t.sizes {
        let g = resize::geometry_shown(frame.width, frame.height, frame.pixel_aspect, *size);
        let rgb = yuv::frame_to_rgb(frame, &g, t.filter).map_err(StillsError::Io)?;
        writer.stills(
            t,
            &rgb,
            g.width,
            g.height,
            3,
            dir,
            size,
            Some(frame.time_s),
            poster,
        )?;
    }
    Ok(())
}

/// Storyboard sheets being filled.
struct Sheets {
    layout: storyboard::Layout,
    pixels: Vec<Vec<u8>>,
    filled: Vec<bool>,
}

impl Sheets {
    fn new(layout: storyboard::Layout) -> Sheets {
        let pixels = (0..layout.sheets())
            .map(|n| {
                let (w, h) = layout.sheet_size(n);
                vec![0u8; (w * h * 3) as usize]
            })
            .collect();
        let filled = vec![false; layout.times.len()];
        Sheets {
            layout,
            pixels,
            filled,
        }
    }

    fn place(&mut self, index: usize, frame: &Frame) -> Result<(), StillsError> {
        let g = resize::Geometry {
            crop: (0.0, 0.0, f64::from(frame.width), f64::from(frame.height)),
            width: self.layout.tile_width,
            height: self.layout.tile_height,
        };
        let tile =
            yuv::frame_to_rgb(frame, &g, resize::Filter::Bilinear).map_err(StillsError::Io)?;
        let (sheet, x, y) = self.layout.place(index);
        let (sw, _) = self.layout.sheet_size(sheet);
        storyboard::blit(&mut self.pixels[sheet], sw, &tile, g.width, g.height, x, y);
        self.filled[index] = true;
        Ok(())
    }

    fn finish(
        self,
        writer: &mut Writer,
        sb: &StoryboardSpec,
        duration: f64,
    ) -> Result<(), StillsError> {
        let ext = sb.format.extension();
        for (n, pixels) in self.pixels.iter().enumerate() {
            let (w, h) = self.layout.sheet_size(n);
            let data = encode(
                pixels,
                w,
                h,
                3,
                sb.format,
                sb.quality,
                encode::DEFAULT_BACKGROUND,
            )
            .map_err(StillsError::Io)?;
            let rel = format!("storyboard/sheet_{n:03}.{ext}");
            let (key, bytes) = writer.write(&rel, &data, FileKind::Media)?;
            let per = self.layout.per_sheet();
            writer
                .produced
                .outputs
                .push(StillOutput::Storyboard(SheetEntry {
                    key,
                    width: w,
                    height: h,
                    tiles: (self.layout.times.len() - n * per).min(per),
                    format: sb.format,
                    bytes,
                }));
        }
        let vtt = self.layout.vtt(duration, |n| format!("sheet_{n:03}.{ext}"));
        let (key, bytes) = writer.write(
            "storyboard/storyboard.vtt",
            vtt.as_bytes(),
            FileKind::Playlist,
        )?;
        writer
            .produced
            .outputs
            .push(StillOutput::StoryboardVtt(VttEntry {
                key,
                tiles: self.layout.times.len(),
                interval_s: sb.interval_s,
                bytes,
            }));
        Ok(())
    }
}
