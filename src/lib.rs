//! media-node: a media processing node for a social-commerce platform.
//!
//! Data flows one way: [`api`] → [`jobs`] → the media libraries ([`media`],
//! [`thumbnail`], [`overlay`]) → [`store`]; [`live`] takes publishers' streams to
//! the same store. The media libraries and [`live`] know nothing of the job queue:
//! what they share with it lives in the leaf modules ([`validation`], [`clock`]).
//!
//! | module         | owns                                                       |
//! |----------------|------------------------------------------------------------|
//! | [`config`]     | layered settings (defaults, TOML, `MEDIA_NODE_*`), secrets |
//! | [`api`]        | the HTTP API, errors as problem JSON, auth, `/media`       |
//! | [`jobs`]       | job specs, the durable queue, workers, webhooks            |
//! | [`process`]    | `media-node process`: the job code on local files          |
//! | [`live`]       | live streams: ingest, segments, relay, playlists, replay   |
//! | [`media`]      | GStreamer: init, allow-list, probe, transcode, HLS         |
//! | [`thumbnail`]  | stills, posters, storyboards, photos (the SIMD hot path)   |
//! | [`overlay`]    | shoppable tags: cards burned in, timed data                |
//! | [`presets`]    | declarative presets from `pipelines/`, compiled in         |
//! | [`output`]     | files a job made, published under its prefix               |
//! | [`store`]      | object storage: filesystem and S3                          |
//! | [`db`]         | opening the node's SQLite database, migrations             |
//! | [`metrics`]    | Prometheus metrics                                         |
//! | [`telemetry`]  | logging and tracing                                        |
//! | [`validation`] | leaf: a field's validation error, for every layer          |
//! | [`clock`]      | leaf: the wall clock in milliseconds, RFC 3339             |
//! | [`node`]       | wiring it all together: `serve`                            |
//! | [`check`]      | `media-node check`: can this configuration run             |

pub mod api;
pub mod check;
pub mod clock;
pub mod config;
pub mod db;
pub mod jobs;
pub mod live;
pub mod media;
pub mod metrics;
pub mod node;
pub mod output;
pub mod overlay;
pub mod presets;
pub mod process;
pub mod sandbox;
pub mod store;
pub mod telemetry;
pub mod thumbnail;
pub mod validation;
