//! Storyboards: tiles every N seconds packed into sprite sheets, and a WebVTT file
//! whose cues point at `sheet.jpg#xywh=x,y,w,h` (the layout players read for
//! scrubbing previews).

use std::fmt::Write as _;

/// Where the tile of each time lands.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub tile_width: u32,
    pub tile_height: u32,
    pub columns: u32,
    pub rows: u32,
    /// Start time of each tile.
    pub times: Vec<f64>,
}

impl Layout {
    /// Tiles every `interval_s` over `duration_s`, each `tile_width` wide with the
    /// picture's aspect (`width` × `height`).
    pub fn new(
        duration_s: f64,
        interval_s: f64,
        width: u32,
        height: u32,
        tile_width: u32,
        columns: u32,
        rows: u32,
    ) -> Layout {
        let tile_width = tile_width.min(width).max(2);
        let tile_height =
            ((f64::from(tile_width) * f64::from(height) / f64::from(width)).round() as u32).max(2);
        Layout {
            tile_width,
            tile_height,
            columns: columns.max(1),
            rows: rows.max(1),
            times: tile_times(duration_s, interval_s),
        }
    }

    pub fn per_sheet(&self) -> usize {
        (self.columns * self.rows) as usize
    }

    pub fn sheets(&self) -> usize {
        self.times.len().div_ceil(self.per_sheet())
    }

    /// (sheet, x, y) of tile `index`.
    pub fn place(&self, index: usize) -> (usize, u32, u32) {
        let per = self.per_sheet();
        let within = (index % per) as u32;
        (
            index / per,
            (within % self.columns) * self.tile_width,
            (within / self.columns) * self.tile_height,
        )
    }

    /// Size of sheet `sheet` (the last one may be shorter).
    pub fn sheet_size(&self, sheet: usize) -> (u32, u32) {
        let per = self.per_sheet();
        let tiles = (self.times.len() - sheet * per).min(per) as u32;
        let cols = tiles.min(self.columns);
        let rows = tiles.div_ceil(self.columns);
        (cols * self.tile_width, rows * self.tile_height)
    }

    /// The WebVTT track; `sheet_uri(n)` names sheet `n` relative to the VTT file.
    pub fn vtt(&self, duration_s: f64, sheet_uri: impl Fn(usize) -> String) -> String {
        let mut out = String::from("WEBVTT\n\n");
        for (i, start) in self.times.iter().enumerate() {
            let end = self
                .times
                .get(i + 1)
                .copied()
                .unwrap_or(duration_s)
                .max(*start);
            let (sheet, x, y) = self.place(i);
            let _ = write!(
                out,
                "{} --> {}\n{}#xywh={x},{y},{},{}\n\n",
                timestamp(*start),
                timestamp(end),
                sheet_uri(sheet),
                self.tile_width,
                self.tile_height
            );
        }
        out
    }
}

/// Start time of each tile: every `interval_s` over `duration_s`, at least one.
pub fn tile_times(duration_s: f64, interval_s: f64) -> Vec<f64> {
    let count = ((duration_s / interval_s).ceil() as usize).max(1);
    (0..count).map(|i| i as f64 * interval_s).collect()
}

/// `HH:MM:SS.mmm`.
pub fn timestamp(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// Copies an RGB tile into an RGB sheet.
pub fn blit(sheet: &mut [u8], sheet_width: u32, tile: &[u8], tw: u32, th: u32, x: u32, y: u32) {
    let (sw, tw, th, x, y) = (
        sheet_width as usize,
        tw as usize,
        th as usize,
        x as usize,
        y as usize,
    );
    for row in 0..th {
        let dst = ((y + row) * sw + x) * 3;
        let src = row * tw * 3;
        sheet[dst..dst + tw * 3].copy_from_slice(&tile[src..src + tw * 3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_duration_and_stays_inside_sheets() {
        let l = Layout::new(17.06, 2.0, 640, 360, 160, 3, 2);
        assert_eq!((l.tile_width, l.tile_height), (160, 90));
        assert_eq!(l.times.len(), 9);
        assert_eq!(l.sheets(), 2);
        assert_eq!(l.place(0), (0, 0, 0));
        assert_eq!(l.place(4), (0, 160, 90));
        assert_eq!(l.place(6), (1, 0, 0));
        assert_eq!(l.sheet_size(0), (480, 180));
        assert_eq!(l.sheet_size(1), (480, 90));
        let vtt = l.vtt(17.06, |n| format!("sheet_{n:03}.jpg"));
        assert!(
            vtt.starts_with(
                "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nsheet_000.jpg#xywh=0,0,160,90"
            )
        );
        assert!(
            vtt.contains("00:00:16.000 --> 00:00:17.060\nsheet_001.jpg#xywh=320,0,160,90"),
            "{vtt}"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(3725.5), "01:02:05.500");
    }
}
