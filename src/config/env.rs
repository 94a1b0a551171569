//! `MEDIA_NODE_*` environment variables and the settings they map to.
//!
//! The mapping is explicit rather than "split on every underscore" so that settings
//! whose names contain underscores (`MEDIA_NODE_API_TOKEN` → `api_token`,
//! `MEDIA_NODE_S3_PATH_STYLE` → `s3.path_style`) map the way the docs say.

use figment::providers::Env;

pub const PREFIX: &str = "MEDIA_NODE_";

/// Sections of [`super::Config`] whose variables are `MEDIA_NODE_<SECTION>_<FIELD>`.
const SECTIONS: &[(&str, &str)] = &[
    ("s3_", "s3"),
    ("db_", "db"),
    ("jobs_", "jobs"),
    ("limits_", "limits"),
    ("webhook_", "webhooks"),
    ("webhooks_", "webhooks"),
    ("log_", "log"),
    ("live_", "live"),
    ("media_", "media"),
    ("auth_", "auth"),
];

/// Variables read by the CLI itself rather than by the settings.
const NOT_SETTINGS: &[&str] = &["config"];

/// `listen` ← `MEDIA_NODE_LISTEN`, `s3.bucket` ← `MEDIA_NODE_S3_BUCKET`, …
/// `name` is the variable without its prefix, lowercased.
pub fn setting_for(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    for (prefix, section) in SECTIONS {
        if let Some(rest) = name.strip_prefix(prefix) {
            return format!("{section}.{rest}");
        }
    }
    name
}

/// The variable that sets `setting` (dotted path), for error messages.
pub fn variable_for(setting: &str) -> String {
    let name = match setting.split_once('.') {
        Some(("webhooks", rest)) => format!("webhook_{rest}"),
        Some((section, rest)) => format!("{section}_{rest}"),
        None => setting.to_string(),
    };
    format!("{PREFIX}{}", name.to_ascii_uppercase())
}

pub fn provider() -> Env {
    Env::prefixed(PREFIX)
        .ignore(NOT_SETTINGS)
        .map(|key| setting_for(key.as_str()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways() {
        for (var, setting) in [
            ("listen", "listen"),
            ("api_token", "api_token"),
            ("data_dir", "data_dir"),
            ("s3_path_style", "s3.path_style"),
            ("jobs_lease_ms", "jobs.lease_ms"),
            ("webhook_secret", "webhooks.secret"),
            ("log_format", "log.format"),
            ("rtmp_listen", "rtmp_listen"),
            ("srt_listen", "srt_listen"),
            ("live_spool_max_bytes", "live.spool_max_bytes"),
            ("media_cors_origins", "media.cors_origins"),
            ("auth_tokens", "auth.tokens"),
        ] {
            assert_eq!(setting_for(var), setting);
            assert_eq!(
                variable_for(setting),
                format!("MEDIA_NODE_{}", var.to_ascii_uppercase())
            );
        }
    }
}
