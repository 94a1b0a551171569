//! The resize kernel of the stills hot path (`thumbnail::resize`, i.e.
//! fast_image_resize with the CPU's SIMD extensions) against
//! `image::imageops::resize`, same input, same filter (Lanczos3).
//!
//! `cargo bench --bench resize`. The input is the corpus' 4000 × 3000 phone photo
//! when `../shared/media` (or `$MEDIA_CORPUS`) is there, otherwise a synthetic
//! picture of the same size; both give the same timings within noise, as
//! convolution cost does not depend on content.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, Rgb};
use media_node::thumbnail::resize::{Filter, Size, geometry, resize};

const WIDTH: u32 = 4000;
const HEIGHT: u32 = 3000;

fn source() -> (Vec<u8>, &'static str) {
    let corpus = std::env::var_os("MEDIA_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/media"));
    let photo = corpus.join("images/photo-4000x3000-exif-orient6-xiaomi.jpg");
    if let Ok(img) = image::open(&photo) {
        let rgb = img.to_rgb8();
        if rgb.dimensions() == (WIDTH, HEIGHT) {
            return (rgb.into_raw(), "photo");
        }
    }
    // Deterministic texture: gradients plus a pseudo-random grain.
    let mut state = 0x2545_f491_u32;
    let data = (0..WIDTH * HEIGHT)
        .flat_map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let (x, y) = (i % WIDTH, i / WIDTH);
            let grain = (state & 0x1f) as u8;
            [
                (x * 255 / WIDTH) as u8 ^ grain,
                (y * 255 / HEIGHT) as u8 ^ grain,
                ((x + y) & 0xff) as u8,
            ]
        })
        .collect();
    (data, "synthetic")
}

fn rgb(c: &mut Criterion) {
    let (data, kind) = source();
    eprintln!("resize bench input: {kind} {WIDTH}x{HEIGHT} RGB");
    let buffer: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(WIDTH, HEIGHT, data.clone()).unwrap();
    let mut group = c.benchmark_group("rgb_4000x3000_lanczos3");
    group.sample_size(10);
    for width in [1280u32, 320] {
        let g = geometry(WIDTH, HEIGHT, Size::Width(width));
        group.bench_with_input(BenchmarkId::new("fast_image_resize", width), &g, |b, g| {
            b.iter(|| resize(black_box(&data), WIDTH, HEIGHT, 3, g, Filter::Lanczos3).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("image_imageops", width), &g, |b, g| {
            b.iter(|| imageops::resize(black_box(&buffer), g.width, g.height, FilterType::Lanczos3))
        });
    }
    group.finish();
}

/// A video frame's luma plane (1080p) to a 320 px thumbnail: the planar path
/// stills from video take.
fn luma(c: &mut Criterion) {
    let (w, h) = (1920u32, 1080u32);
    let plane: Vec<u8> = (0..w * h).map(|i| ((i % w) ^ (i / w)) as u8).collect();
    let buffer: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_raw(w, h, plane.clone()).unwrap();
    let g = geometry(w, h, Size::Width(320));
    let mut group = c.benchmark_group("luma_1920x1080_to_320_lanczos3");
    group.bench_function("fast_image_resize", |b| {
        b.iter(|| resize(black_box(&plane), w, h, 1, &g, Filter::Lanczos3).unwrap())
    });
    group.bench_function("image_imageops", |b| {
        b.iter(|| imageops::resize(black_box(&buffer), g.width, g.height, FilterType::Lanczos3))
    });
    group.finish();
}

criterion_group!(benches, rgb, luma);
criterion_main!(benches);
