//! Declarative presets from `pipelines/`: encoding ladders (and, with the features
//! that use them, thumbnail sets, tag styles and live profiles).
//!
//! The files in the repository's `pipelines/` folder are compiled into the binary,
//! so a node always has them; `pipelines_dir` (`MEDIA_NODE_PIPELINES_DIR`) adds
//! presets or replaces built-in ones by name. Everything is validated when the node
//! starts: a broken preset stops the node with a message naming the file and field.
//! Pipelines are built from these typed presets, never from launch strings.

pub mod ladder;
pub mod live;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use ladder::{AudioPreset, H264Profile, Ladder, Rung};
pub use live::LiveProfile;

use crate::overlay::style::TagStyle;
use crate::thumbnail::spec::ThumbnailsSpec;

const BUILTIN_LADDERS: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../../pipelines/ladders/default.toml"),
    ),
    ("small", include_str!("../../pipelines/ladders/small.toml")),
];

const BUILTIN_THUMBNAILS: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../../pipelines/thumbnails/default.toml"),
    ),
    (
        "search",
        include_str!("../../pipelines/thumbnails/search.toml"),
    ),
];

const BUILTIN_TAG_STYLES: &[(&str, &str)] = &[
    ("default", include_str!("../../pipelines/tags/default.toml")),
    ("light", include_str!("../../pipelines/tags/light.toml")),
];

const BUILTIN_LIVE: &[(&str, &str)] =
    &[("default", include_str!("../../pipelines/live/default.toml"))];

fn parse_tag_style(text: &str, source: &str) -> Result<TagStyle, PresetError> {
    TagStyle::parse(text).map_err(|e| invalid(source, e))
}

/// A thumbnail preset: a `thumbnails` spec with a description.
fn parse_thumbnails(text: &str, source: &str) -> Result<ThumbnailsSpec, PresetError> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| invalid(source, e.message().to_string()))?;
    table.remove("description");
    let spec: ThumbnailsSpec = table
        .try_into()
        .map_err(|e: toml::de::Error| invalid(source, e.message().to_string()))?;
    if spec.preset.is_some() {
        return Err(invalid(source, "a preset cannot name another preset"));
    }
    let mut errors = Vec::new();
    if spec.resolve("preset", &mut errors).is_none() {
        let detail: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        return Err(invalid(source, detail.join("; ")));
    }
    Ok(spec)
}

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("preset {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("reading presets from {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn invalid(source_name: &str, message: impl Into<String>) -> PresetError {
    PresetError::Invalid {
        source_name: source_name.to_string(),
        message: message.into(),
    }
}

/// All presets a node knows, by name.
#[derive(Debug, Clone)]
pub struct Presets {
    ladders: BTreeMap<String, Ladder>,
    thumbnails: BTreeMap<String, ThumbnailsSpec>,
    tag_styles: BTreeMap<String, TagStyle>,
    live: BTreeMap<String, LiveProfile>,
}

impl Presets {
    /// The presets compiled into the binary.
    pub fn builtin() -> Result<Presets, PresetError> {
        let mut ladders = BTreeMap::new();
        for (name, text) in BUILTIN_LADDERS {
            let source = format!("pipelines/ladders/{name}.toml (built in)");
            ladders.insert(name.to_string(), Ladder::parse(name, text, &source)?);
        }
        let mut thumbnails = BTreeMap::new();
        for (name, text) in BUILTIN_THUMBNAILS {
            let source = format!("pipelines/thumbnails/{name}.toml (built in)");
            thumbnails.insert(name.to_string(), parse_thumbnails(text, &source)?);
        }
        let mut tag_styles = BTreeMap::new();
        for (name, text) in BUILTIN_TAG_STYLES {
            let source = format!("pipelines/tags/{name}.toml (built in)");
            tag_styles.insert(name.to_string(), parse_tag_style(text, &source)?);
        }
        let mut live = BTreeMap::new();
        for (name, text) in BUILTIN_LIVE {
            let source = format!("pipelines/live/{name}.toml (built in)");
            live.insert(name.to_string(), LiveProfile::parse(text, &source)?);
        }
        Ok(Presets {
            ladders,
            thumbnails,
            tag_styles,
            live,
        })
    }

    /// Built-in presets, then those of `dir` (same layout as `pipelines/`), which
    /// replace built-in ones of the same name.
    pub fn load(dir: Option<&Path>) -> Result<Presets, PresetError> {
        let mut presets = Presets::builtin()?;
        let Some(dir) = dir else {
            return Ok(presets);
        };
        for (name, text, source) in read_folder(&dir.join("ladders"))? {
            let ladder = Ladder::parse(&name, &text, &source)?;
            presets.ladders.insert(name, ladder);
        }
        for (name, text, source) in read_folder(&dir.join("thumbnails"))? {
            let spec = parse_thumbnails(&text, &source)?;
            presets.thumbnails.insert(name, spec);
        }
        for (name, text, source) in read_folder(&dir.join("tags"))? {
            let style = parse_tag_style(&text, &source)?;
            presets.tag_styles.insert(name, style);
        }
        for (name, text, source) in read_folder(&dir.join("live"))? {
            let profile = LiveProfile::parse(&text, &source)?;
            presets.live.insert(name, profile);
        }
        Ok(presets)
    }

    pub fn thumbnails(&self, name: &str) -> Option<&ThumbnailsSpec> {
        self.thumbnails.get(name)
    }

    pub fn thumbnail_names(&self) -> impl Iterator<Item = &str> {
        self.thumbnails.keys().map(String::as_str)
    }

    pub fn tag_style(&self, name: &str) -> Option<&TagStyle> {
        self.tag_styles.get(name)
    }

    pub fn tag_style_names(&self) -> impl Iterator<Item = &str> {
        self.tag_styles.keys().map(String::as_str)
    }

    pub fn live_profile(&self, name: &str) -> Option<&LiveProfile> {
        self.live.get(name)
    }

    pub fn live_profile_names(&self) -> impl Iterator<Item = &str> {
        self.live.keys().map(String::as_str)
    }

    pub fn ladder(&self, name: &str) -> Option<&Ladder> {
        self.ladders.get(name)
    }

    pub fn ladder_names(&self) -> impl Iterator<Item = &str> {
        self.ladders.keys().map(String::as_str)
    }

    /// GStreamer elements the presets need (checked by `check` and `/readyz`).
    pub fn required_elements(&self) -> Vec<&'static str> {
        let mut elements = vec![
            "videoconvert",
            "videoscale",
            "videorate",
            "videoflip",
            "audioconvert",
            "audioresample",
            "tee",
            "queue",
            "x264enc",
            "h264parse",
            "avenc_aac",
            "aacparse",
            "mp4mux",
            "mpegtsmux",
            "splitmuxsink",
            "filesink",
        ];
        elements.sort_unstable();
        elements
    }
}

/// `(name, text, source)` of every `*.toml` in `dir`, in name order.
fn read_folder(dir: &Path) -> Result<Vec<(String, String, String)>, PresetError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PresetError::Io(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for path in entries {
        let source = path.display().to_string();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| invalid(&source, "file name is not UTF-8"))?
            .to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| PresetError::Io(path.clone(), e))?;
        out.push((name, text, source));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_are_valid() {
        let presets = Presets::builtin().unwrap();
        let ladder = presets.ladder("default").unwrap();
        let names: Vec<&str> = ladder.rungs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["1080p", "720p", "480p", "360p"]);
        assert!(presets.ladder("small").is_some());
        assert!(presets.thumbnails("default").is_some());
        assert!(presets.thumbnails("search").is_some());
        assert!(presets.tag_style("default").is_some());
        assert!(presets.live_profile("default").is_some());
    }

    #[test]
    fn a_directory_adds_and_replaces_ladders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ladders")).unwrap();
        let text = include_str!("../../pipelines/ladders/small.toml");
        std::fs::write(dir.path().join("ladders/tiny.toml"), text).unwrap();
        std::fs::write(
            dir.path().join("ladders/default.toml"),
            text.replace("480p", "432p")
                .replace("short_side = 480", "short_side = 432"),
        )
        .unwrap();
        let presets = Presets::load(Some(dir.path())).unwrap();
        assert!(presets.ladder("tiny").is_some());
        assert_eq!(presets.ladder("default").unwrap().rungs[0].name, "432p");
    }

    #[test]
    fn a_broken_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ladders")).unwrap();
        std::fs::write(dir.path().join("ladders/bad.toml"), "max_fps = \"fast\"\n").unwrap();
        let err = Presets::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
    }
}
