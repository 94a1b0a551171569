//! The node's wall clock, in one place: milliseconds since the Unix epoch, and
//! how they are shown on the wire. A leaf module every layer may use.

/// Now, in milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `ms` as RFC 3339 in UTC with millisecond precision, e.g.
/// `2026-12-01T20:04:33.123Z`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_155_473_123), "2026-12-01T20:04:33.123Z");
    }

    #[test]
    fn now_is_after_this_was_written() {
        assert!(now_ms() > 1_796_155_473_123 - 86_400_000 * 30);
    }
}
