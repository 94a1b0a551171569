//! Logging: `tracing` to stderr, human-readable by default or JSON lines.
//! `RUST_LOG` overrides the configured filter.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// `srt_protocol` logs what any packet from the network makes it think (and
/// its debug records print whole packets, stream ids included): errors only,
/// unless the filter names it.
fn quiet_protocols(filter: &str) -> String {
    if filter.contains("srt_protocol") {
        filter.to_string()
    } else {
        format!("{filter},srt_protocol=error")
    }
}

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(quiet_protocols(&config.filter)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
