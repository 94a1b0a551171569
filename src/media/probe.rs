//! Probing an input: what container, streams and codecs it holds, how long it is,
//! and how it must be turned for display.
//!
//! Two steps, both before any decoding: typefind on the first bytes (refusing
//! anything outside [`super::ALLOWED_CONTAINERS`], which also catches playlists and
//! text uploaded as media), then GStreamer's Discoverer on the local file. The
//! Discoverer blocks, so [`probe_file`] runs it on tokio's blocking pool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ALLOWED_CONTAINERS, MediaError, init};

/// Bytes read for typefinding. MP4/MOV and Matroska announce themselves in the first
/// few hundred bytes; a generous head also lets MPEG-TS and text be recognised.
const TYPEFIND_HEAD_BYTES: usize = 256 * 1024;

/// What a probe records about an input (`result.probe` of a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    /// `mp4`, `mov`, `3gp`, `m4a`, `webm` or `matroska`.
    pub container: String,
    /// Typefind caps name, e.g. `video/quicktime`.
    pub mime: String,
    pub size_bytes: u64,
    pub duration_s: f64,
    /// Coded width and height of the first video stream, before rotation.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Degrees to turn the picture clockwise for display (0, 90, 180, 270).
    pub rotation: u32,
    /// The picture must also be mirrored for display.
    pub flipped: bool,
    /// Average frame rate of the first video stream, when known.
    pub fps: Option<f64>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// Overall bit rate in bits per second (size and duration).
    pub bitrate: Option<u64>,
    pub streams: Vec<StreamProbe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamProbe {
    /// `video`, `audio`, `subtitle` or `other`.
    pub kind: String,
    pub codec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Pixel aspect ratio as `n:d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_aspect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colorimetry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
}

/// Probes a local file without blocking the async runtime.
pub async fn probe_file(path: &Path, timeout: Duration) -> Result<Probe, MediaError> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || probe_blocking(&path, timeout))
        .await
        .map_err(|e| MediaError::Internal(format!("probe task: {e}")))?
}

/// Typefinds the head of a file; refuses anything outside the container allow-list.
pub fn sniff_container(path: &Path) -> Result<gst::Caps, MediaError> {
    init()?;
    let mut head = Vec::with_capacity(TYPEFIND_HEAD_BYTES);
    std::fs::File::open(path)
        .and_then(|f| f.take(TYPEFIND_HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| MediaError::Internal(format!("reading input: {e}")))?;
    if head.is_empty() {
        return Err(MediaError::NotMedia);
    }
    let (caps, probability) =
        gstreamer_base::functions::type_find_helper_for_data(None::<&gst::Object>, &head)
            .map_err(|_| MediaError::NotMedia)?;
    let name = caps
        .structure(0)
        .map(|s| s.name().to_string())
        .unwrap_or_default();
    if ALLOWED_CONTAINERS.contains(&name.as_str()) {
        if probability < gst::TypeFindProbability::Possible {
            return Err(MediaError::NotMedia);
        }
        return Ok(caps);
    }
    if name.starts_with("text/") || name == "application/xml" || name.is_empty() {
        Err(MediaError::NotMedia)
    } else {
        Err(MediaError::UnsupportedContainer(name))
    }
}

fn probe_blocking(path: &Path, timeout: Duration) -> Result<Probe, MediaError> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| MediaError::Internal(format!("reading input: {e}")))?
        .len();
    let container_caps = sniff_container(path)?;
    let is_isobmff = container_caps
        .structure(0)
        .is_some_and(|s| s.name() == "video/quicktime" || s.name() == "audio/x-m4a");
    if is_isobmff {
        check_isobmff_boxes(path, size_bytes)?;
    }
    let absolute =
        std::path::absolute(path).map_err(|e| MediaError::Internal(format!("input path: {e}")))?;
    let uri = gst::glib::filename_to_uri(&absolute, None)
        .map_err(|e| MediaError::Internal(format!("input path: {e}")))?;
    let timeout_ms = timeout.as_millis() as u64;
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_mseconds(timeout_ms))
        .map_err(|e| MediaError::Internal(e.to_string()))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| classify_error(&e))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(MediaError::Timeout(timeout_ms)),
        pbutils::DiscovererResult::MissingPlugins => {
            // Phones add metadata tracks nobody decodes; only missing audio and
            // video decoders matter.
            let missing: Vec<String> = info
                .missing_elements_installer_details()
                .iter()
                .filter_map(|d| missing_media_decoder(d))
                .collect();
            if !missing.is_empty() {
                return Err(MediaError::UnsupportedCodec(missing.join(", ")));
            }
        }
        other => return Err(MediaError::Malformed(format!("{other:?}"))),
    }
    build_probe(&info, &container_caps, size_bytes)
}

/// Walks the top-level boxes of an MP4/MOV file, and the boxes inside `moov`:
/// each must fit inside its parent. The Discoverer only reads headers, so a file
/// cut short after its `moov` would otherwise probe fine and fail only later, in
/// the middle of a transcode; and a `moov` whose boxes claim sizes past its end
/// can keep the Discoverer waiting until its timeout instead of failing.
pub fn check_isobmff_boxes(path: &Path, file_size: u64) -> Result<(), MediaError> {
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let top = scan_boxes(&mut file, 0, file_size, None)?;
    if top.is_empty() {
        return Err(MediaError::NotMedia);
    }
    for b in top.iter().filter(|b| b.kind == "moov") {
        scan_boxes(
            &mut file,
            b.offset + b.header_len,
            b.offset + b.size,
            Some("moov"),
        )?;
    }
    Ok(())
}

struct BoxHeader {
    kind: String,
    offset: u64,
    header_len: u64,
    size: u64,
}

fn read_error(e: std::io::Error) -> MediaError {
    MediaError::Internal(format!("reading input: {e}"))
}

/// The boxes from byte `start` to `end` (the file, or the inside of `parent`).
fn scan_boxes(
    file: &mut std::fs::File,
    start: u64,
    end: u64,
    parent: Option<&str>,
) -> Result<Vec<BoxHeader>, MediaError> {
    use std::io::{Seek, SeekFrom};
    let within = parent.map(|p| format!(" inside `{p}`")).unwrap_or_default();
    let mut offset = start;
    let mut boxes = Vec::new();
    while end - offset >= 8 {
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(offset)).map_err(read_error)?;
        file.read_exact(&mut header[..8]).map_err(read_error)?;
        let size32 = u32::from_be_bytes(header[0..4].try_into().unwrap_or_default());
        let kind = &header[4..8];
        if !kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(MediaError::Malformed(format!(
                "unreadable box header at byte {offset}{within}"
            )));
        }
        let kind = String::from_utf8_lossy(kind).to_string();
        let (header_len, box_size) = match size32 {
            0 => (8, end - offset),
            1 => {
                if end - offset < 16 {
                    return Err(MediaError::Malformed(format!(
                        "`{kind}` box header cut short{within}"
                    )));
                }
                file.read_exact(&mut header[8..16]).map_err(read_error)?;
                (
                    16,
                    u64::from_be_bytes(header[8..16].try_into().unwrap_or_default()),
                )
            }
            n => (8, u64::from(n)),
        };
        if box_size < header_len {
            return Err(MediaError::Malformed(format!(
                "`{kind}` box at byte {offset}{within} has an impossible size"
            )));
        }
        if box_size > end - offset {
            return Err(MediaError::Malformed(match parent {
                None => format!(
                    "truncated: the `{kind}` box needs {box_size} bytes from byte {offset}, \
                     but the file ends after {} bytes",
                    end - offset
                ),
                Some(p) => format!(
                    "the `{kind}` box at byte {offset} claims {box_size} bytes, \
                     past the end of its `{p}` box"
                ),
            }));
        }
        boxes.push(BoxHeader {
            kind,
            offset,
            header_len,
            size: box_size,
        });
        offset += box_size;
    }
    Ok(boxes)
}

/// The caps of a missing audio or video decoder, from an installer detail string
/// (`gstreamer|1.0|app|description|decoder-video/x-h265, ...`).
fn missing_media_decoder(detail: &str) -> Option<String> {
    let caps = detail.rsplit('|').next()?.strip_prefix("decoder-")?;
    (caps.starts_with("video/") || caps.starts_with("audio/")).then(|| caps.to_string())
}

fn classify_error(err: &gst::glib::Error) -> MediaError {
    if err.kind::<gst::CoreError>() == Some(gst::CoreError::MissingPlugin) {
        return MediaError::UnsupportedCodec(err.message().to_string());
    }
    if let Some(stream) = err.kind::<gst::StreamError>() {
        return match stream {
            gst::StreamError::CodecNotFound | gst::StreamError::WrongType => {
                MediaError::UnsupportedCodec(err.message().to_string())
            }
            _ => MediaError::Malformed(err.message().to_string()),
        };
    }
    MediaError::Malformed(err.message().to_string())
}

fn build_probe(
    info: &pbutils::DiscovererInfo,
    container_caps: &gst::Caps,
    size_bytes: u64,
) -> Result<Probe, MediaError> {
    let (mime, container) = container_name(container_caps);
    let duration_s = info
        .duration()
        .map(|d| d.nseconds() as f64 / 1e9)
        .unwrap_or(0.0);
    let mut streams = Vec::new();
    let mut rotation = 0;
    let mut flipped = false;

    for (index, video) in info.video_streams().iter().enumerate() {
        let caps = video.caps();
        let structure = caps
            .as_ref()
            .and_then(|c| c.structure(0).map(|s| s.to_owned()));
        let fps = fraction_to_f64(video.framerate());
        let par = video.par();
        if index == 0 {
            let orientation = video
                .tags()
                .and_then(|t| image_orientation(&t))
                .or_else(|| {
                    info.stream_info()
                        .and_then(|s| s.tags())
                        .and_then(|t| image_orientation(&t))
                });
            if let Some((deg, flip)) = orientation {
                rotation = deg;
                flipped = flip;
            }
        }
        streams.push(StreamProbe {
            kind: if video.is_image() { "image" } else { "video" }.into(),
            codec: caps.as_ref().map(codec_name),
            width: Some(video.width()),
            height: Some(video.height()),
            fps,
            pixel_aspect: (par.numer() > 0 && par.denom() > 0)
                .then(|| format!("{}:{}", par.numer(), par.denom())),
            bit_depth: structure
                .as_ref()
                .and_then(|s| s.get::<u32>("bit-depth-luma").ok())
                .or_else(|| (video.depth() > 0 && video.depth() <= 16).then(|| video.depth())),
            colorimetry: structure
                .as_ref()
                .and_then(|s| s.get::<String>("colorimetry").ok()),
            channels: None,
            sample_rate: None,
            bitrate: (video.bitrate() > 0).then(|| video.bitrate()),
        });
    }
    for audio in info.audio_streams() {
        streams.push(StreamProbe {
            kind: "audio".into(),
            codec: audio.caps().as_ref().map(codec_name),
            width: None,
            height: None,
            fps: None,
            pixel_aspect: None,
            bit_depth: None,
            colorimetry: None,
            channels: Some(audio.channels()),
            sample_rate: Some(audio.sample_rate()),
            bitrate: (audio.bitrate() > 0).then(|| audio.bitrate()),
        });
    }
    for sub in info.subtitle_streams() {
        streams.push(StreamProbe {
            kind: "subtitle".into(),
            codec: sub.caps().as_ref().map(codec_name),
            width: None,
            height: None,
            fps: None,
            pixel_aspect: None,
            bit_depth: None,
            colorimetry: None,
            channels: None,
            sample_rate: None,
            bitrate: None,
        });
    }
    if streams.is_empty() {
        return Err(MediaError::Malformed("no audio or video streams".into()));
    }

    let first_video = streams.iter().find(|s| s.kind == "video");
    let first_audio = streams.iter().find(|s| s.kind == "audio");
    Ok(Probe {
        container,
        mime,
        size_bytes,
        duration_s: round3(duration_s),
        width: first_video.and_then(|v| v.width),
        height: first_video.and_then(|v| v.height),
        rotation,
        flipped,
        fps: first_video.and_then(|v| v.fps),
        video_codec: first_video.and_then(|v| v.codec.clone()),
        audio_codec: first_audio.and_then(|a| a.codec.clone()),
        bitrate: (duration_s > 0.0).then(|| (size_bytes as f64 * 8.0 / duration_s) as u64),
        streams,
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fraction_to_f64(f: gst::Fraction) -> Option<f64> {
    (f.numer() > 0 && f.denom() > 0).then(|| round3(f.numer() as f64 / f.denom() as f64))
}

fn container_name(caps: &gst::Caps) -> (String, String) {
    let Some(s) = caps.structure(0) else {
        return (String::new(), "unknown".into());
    };
    let mime = s.name().to_string();
    let container = match mime.as_str() {
        "video/quicktime" => match s.get::<String>("variant").ok().as_deref() {
            Some("apple") | None => "mov",
            Some("3gpp") | Some("3g2") => "3gp",
            Some(_) => "mp4",
        },
        "audio/x-m4a" => "m4a",
        "video/webm" | "audio/webm" => "webm",
        "video/x-matroska" | "audio/x-matroska" => "matroska",
        _ => "unknown",
    };
    (mime, container.to_string())
}

/// A short, ffprobe-like codec name from stream caps.
pub fn codec_name(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".into();
    };
    let name = s.name().as_str();
    let known = match name {
        "video/x-h264" => "h264",
        "video/x-h265" => "hevc",
        "video/x-vp8" => "vp8",
        "video/x-vp9" => "vp9",
        "video/x-av1" => "av1",
        "video/x-prores" => "prores",
        "video/x-theora" => "theora",
        "video/x-divx" | "video/x-xvid" => "mpeg4",
        "video/mpeg" => match s.get::<i32>("mpegversion").unwrap_or(0) {
            4 => "mpeg4",
            2 => "mpeg2video",
            _ => "mpeg1video",
        },
        "image/jpeg" => "mjpeg",
        "audio/mpeg" => match (
            s.get::<i32>("mpegversion").unwrap_or(0),
            s.get::<i32>("layer").unwrap_or(0),
        ) {
            (2 | 4, _) => "aac",
            (1, 3) => "mp3",
            (1, 2) => "mp2",
            _ => "mpeg-audio",
        },
        "audio/x-opus" => "opus",
        "audio/x-vorbis" => "vorbis",
        "audio/x-flac" => "flac",
        "audio/x-ac3" => "ac3",
        "audio/x-eac3" => "eac3",
        "audio/x-alac" => "alac",
        "audio/x-raw" => "pcm",
        "audio/x-alaw" => "pcm_alaw",
        "audio/x-mulaw" => "pcm_mulaw",
        _ => "",
    };
    if known.is_empty() {
        name.rsplit('/')
            .next()
            .unwrap_or(name)
            .trim_start_matches("x-")
            .to_string()
    } else {
        known.to_string()
    }
}

/// Degrees clockwise and mirroring from an `image-orientation` tag.
fn image_orientation(tags: &gst::TagList) -> Option<(u32, bool)> {
    let value = tags.get::<gst::tags::ImageOrientation>()?;
    let value = value.get();
    let (flip, rest) = match value.strip_prefix("flip-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let degrees = rest.strip_prefix("rotate-")?.parse::<u32>().ok()?;
    matches!(degrees, 0 | 90 | 180 | 270).then_some((degrees, flip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(s: &str) -> gst::Caps {
        init().unwrap();
        s.parse().unwrap()
    }

    #[test]
    fn codec_names_follow_ffprobe() {
        assert_eq!(codec_name(&caps("video/x-h264, stream-format=avc")), "h264");
        assert_eq!(codec_name(&caps("video/x-h265")), "hevc");
        assert_eq!(codec_name(&caps("audio/mpeg, mpegversion=4")), "aac");
        assert_eq!(
            codec_name(&caps("audio/mpeg, mpegversion=1, layer=3")),
            "mp3"
        );
        assert_eq!(codec_name(&caps("audio/x-raw, format=S16LE")), "pcm");
        assert_eq!(codec_name(&caps("video/x-something-new")), "something-new");
    }

    #[test]
    fn only_missing_audio_and_video_decoders_matter() {
        assert_eq!(
            missing_media_decoder("gstreamer|1.0|app|meta decoder|decoder-meta/x-gst-fourcc-mebx"),
            None
        );
        assert_eq!(
            missing_media_decoder("gstreamer|1.0|app|H.266 decoder|decoder-video/x-h266"),
            Some("video/x-h266".into())
        );
    }

    #[test]
    fn container_names() {
        assert_eq!(
            container_name(&caps("video/quicktime, variant=iso")).1,
            "mp4"
        );
        assert_eq!(
            container_name(&caps("video/quicktime, variant=apple")).1,
            "mov"
        );
        assert_eq!(container_name(&caps("video/webm")).1, "webm");
    }

    #[test]
    fn orientation_tags() {
        init().unwrap();
        let mut tags = gst::TagList::new();
        tags.make_mut()
            .add::<gst::tags::ImageOrientation>(&"rotate-90", gst::TagMergeMode::Replace);
        assert_eq!(image_orientation(&tags), Some((90, false)));
        let mut tags = gst::TagList::new();
        tags.make_mut()
            .add::<gst::tags::ImageOrientation>(&"flip-rotate-180", gst::TagMergeMode::Replace);
        assert_eq!(image_orientation(&tags), Some((180, true)));
    }

    fn write_boxes(path: &Path, boxes: &[(&[u8; 4], u32, usize)]) {
        let mut data = Vec::new();
        for (kind, declared, actual) in boxes {
            data.extend_from_slice(&declared.to_be_bytes());
            data.extend_from_slice(*kind);
            if *kind == b"moov" && *actual >= 16 {
                // One child filling it, as a real `moov` has (`mvhd`, `trak`...).
                data.extend_from_slice(&(*actual as u32 - 8).to_be_bytes());
                data.extend_from_slice(b"mvhd");
                data.extend(std::iter::repeat_n(0u8, actual - 16));
            } else {
                data.extend(std::iter::repeat_n(0u8, actual - 8));
            }
        }
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn isobmff_box_walk_finds_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();

        write_boxes(
            &path,
            &[
                (b"ftyp", 16, 16),
                (b"moov", 100, 100),
                (b"mdat", 1000, 1000),
            ],
        );
        check_isobmff_boxes(&path, size(&path)).unwrap();

        write_boxes(
            &path,
            &[(b"ftyp", 16, 16), (b"moov", 100, 100), (b"mdat", 1000, 400)],
        );
        let err = check_isobmff_boxes(&path, size(&path)).unwrap_err();
        assert!(
            matches!(err, MediaError::Malformed(ref m) if m.contains("mdat")),
            "{err:?}"
        );

        write_boxes(&path, &[(b"ftyp", 16, 16), (b"moov", 0xffff_ff00, 100)]);
        assert!(check_isobmff_boxes(&path, size(&path)).is_err());

        write_boxes(&path, &[(b"ftyp", 16, 16), (b"mdat", 0, 500)]);
        check_isobmff_boxes(&path, size(&path)).unwrap();

        // A `moov` whose first child claims more than the `moov` holds (a
        // damaged header): refused at once, not left to the Discoverer, which
        // may wait for its timeout on such a file.
        write_boxes(&path, &[(b"ftyp", 16, 16), (b"moov", 100, 100)]);
        let mut data = std::fs::read(&path).unwrap();
        data[24..28].copy_from_slice(&0xABAB_ABABu32.to_be_bytes());
        std::fs::write(&path, data).unwrap();
        let err = check_isobmff_boxes(&path, size(&path)).unwrap_err();
        assert!(
            matches!(err, MediaError::Malformed(ref m) if m.contains("past the end of its `moov`")),
            "{err:?}"
        );
    }

    #[test]
    fn text_and_playlists_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.mp4");
        std::fs::write(&text, "hello, this is not a video\n".repeat(100)).unwrap();
        assert!(matches!(sniff_container(&text), Err(MediaError::NotMedia)));

        let playlist = dir.path().join("list.mp4");
        std::fs::write(
            &playlist,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nhttp://example.com/a.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let err = sniff_container(&playlist).unwrap_err();
        assert!(
            matches!(err, MediaError::UnsupportedContainer(ref m) if m == "application/x-hls"),
            "{err:?}"
        );

        let empty = dir.path().join("empty.mp4");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(sniff_container(&empty), Err(MediaError::NotMedia)));
    }
}
