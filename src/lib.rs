//! media-node: a media processing node for a social-commerce platform.
//!
//! | module      | owns                                                        |
//! |-------------|-------------------------------------------------------------|
//! | [`config`]  | layered settings (defaults, TOML, `MEDIA_NODE_*`)           |
//! | [`api`]     | the HTTP API, errors as problem JSON, auth, `/media`        |
//! | [`jobs`]    | job specs, the durable queue, workers, webhooks             |
//! | [`live`]    | live streams: keys, throttling, live and replay playlists   |
//! | [`media`]   | GStreamer: init, allow-list, probe, transcode, HLS          |
//! | [`overlay`] | shoppable tags: cards burned in, timed data              |
//! | [`presets`] | declarative presets from `pipelines/`                      |
//! | [`store`]   | object storage: filesystem and S3                           |
//! | [`metrics`] | Prometheus metrics                                          |
//! | [`node`]    | wiring it all together: `serve`, `check`                    |

pub mod api;
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
pub mod store;
pub mod telemetry;
pub mod thumbnail;
