//! Real tools looking at real media: ffmpeg makes clips and reference pictures,
//! ffprobe and exiftool read what the node wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// An H.264 (ultrafast) + AAC test pattern of `size` (`1280x720`) at 30 fps,
/// `seconds` long.
pub fn test_clip(dir: &Path, name: &str, size: &str, seconds: u32) -> PathBuf {
    let video = format!("testsrc2=size={size}:rate=30:duration={seconds}");
    let audio = format!("sine=duration={seconds}");
    generate(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            &video,
            "-f",
            "lavfi",
            "-i",
            &audio,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    )
}

/// Generates a clip with ffmpeg's test sources.
pub fn generate(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg is installed (scripts/setup-debian)");
    assert!(status.success(), "ffmpeg could not make {name}");
    out
}

pub fn ffprobe(url: &str) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(url)
        .output()
        .expect("ffprobe is installed");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn stream<'a>(probe: &'a Value, kind: &str) -> Option<&'a Value> {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
}

/// Side of the small pictures compared by [`mean_abs_diff`].
pub const SAMPLE: usize = 32;

/// Decodes `input` with ffmpeg (which applies EXIF orientation and display
/// matrices itself) and squeezes each frame into a `SAMPLE` × `SAMPLE` RGB
/// picture. `before` runs as ffmpeg input options (e.g. `-ss 1 -t 0.2`),
/// `filter` before the squeeze (a filtergraph over `[0]`, e.g. flattening
/// alpha over white).
pub fn rgb_samples(input: &Path, before: &[&str], filter: Option<&str>) -> Vec<Vec<u8>> {
    let squeeze = format!("scale={SAMPLE}:{SAMPLE}:flags=area,format=rgb24");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error"])
        .args(before)
        .arg("-i")
        .arg(input);
    match filter {
        Some(graph) => cmd.args(["-filter_complex", &format!("{graph},{squeeze}")]),
        None => cmd.args(["-vf", &squeeze]),
    };
    let out = cmd
        .args(["-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg is installed");
    assert!(
        out.status.success(),
        "ffmpeg {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let frame = SAMPLE * SAMPLE * 3;
    assert!(
        out.stdout.len() >= frame,
        "no frame from {}",
        input.display()
    );
    out.stdout.chunks_exact(frame).map(<[u8]>::to_vec).collect()
}

/// Mean absolute difference of two samples, in 8-bit levels per channel.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// Metadata groups exiftool finds in a file beyond what describes the pixels
/// themselves (file format, JFIF density, RIFF/PNG headers): EXIF, GPS, XMP, ICC,
/// maker notes, MPF, QuickTime user data and so on.
pub fn metadata_beyond_pixels(path: &Path) -> Vec<String> {
    const BENIGN: [&str; 6] = ["ExifTool", "System", "File", "JFIF", "RIFF", "Composite"];
    let out = Command::new("exiftool")
        .args(["-j", "-a", "-G1", "-n"])
        .arg(path)
        .output()
        .expect("exiftool is installed (scripts/setup-debian)");
    assert!(out.status.success(), "exiftool {}", path.display());
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found = Vec::new();
    for (key, value) in parsed[0].as_object().unwrap() {
        let Some((group, tag)) = key.split_once(':') else {
            continue;
        };
        // PNG's own header chunk describes pixels; anything else in PNG (text,
        // eXIf, iCCP) is metadata.
        let benign = BENIGN.contains(&group)
            || (group == "PNG"
                && matches!(
                    tag,
                    "ImageWidth"
                        | "ImageHeight"
                        | "BitDepth"
                        | "ColorType"
                        | "Compression"
                        | "Filter"
                        | "Interlace"
                ));
        if !benign {
            found.push(format!("{key}={value}"));
        }
    }
    found
}

/// Width and height of a picture, from its header (exiftool).
pub fn picture_size(path: &Path) -> (u32, u32) {
    let out = Command::new("exiftool")
        .args(["-j", "-n", "-ImageWidth", "-ImageHeight"])
        .arg(path)
        .output()
        .expect("exiftool is installed");
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        parsed[0]["ImageWidth"].as_u64().unwrap() as u32,
        parsed[0]["ImageHeight"].as_u64().unwrap() as u32,
    )
}

/// Mean and variance of the luma of a picture (ffmpeg decodes it to gray).
pub fn luma_stats(path: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-vf", "format=gray", "-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg is installed");
    assert!(out.status.success());
    let n = out.stdout.len() as f64;
    let mean = out.stdout.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = out
        .stdout
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var)
}
