//! Slowing down wrong stream keys. Each address that presents a wrong key earns
//! a penalty that doubles with every further failure (up to a cap) and fades
//! after a quiet period; while it lasts, that address's next attempt is refused
//! before its key is even looked at. Only failures count: a creator reconnecting
//! with the right key is never slowed down, and an attacker guessing from one
//! address cannot lock the right key out from another.
//!
//! A small map rather than a rate-limiter crate: `governor` and its kind count
//! attempts, not failures, and cannot check without counting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures tolerated before an address is slowed down.
const FREE_FAILURES: u32 = 3;
/// First penalty, doubled per further failure.
const BASE_PENALTY: Duration = Duration::from_millis(500);
/// Longest penalty.
const MAX_PENALTY: Duration = Duration::from_secs(60);
/// An address quiet this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses tracked at most (oldest forgotten first), so a flood of spoofed
/// sources cannot grow the map without bound.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Throttle {
    records: HashMap<IpAddr, Record>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// How long `addr` must still wait before its attempt is considered, if at all.
    pub fn wait(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let record = self.records.get(&addr)?;
        let until = record.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a wrong key from `addr`.
    pub fn failed(&mut self, addr: IpAddr, now: Instant) {
        if self.records.len() >= MAX_ADDRESSES && !self.records.contains_key(&addr) {
            self.forget_stale(now);
            if self.records.len() >= MAX_ADDRESSES
                && let Some(oldest) = self
                    .records
                    .iter()
                    .min_by_key(|(_, r)| r.last)
                    .map(|(a, _)| *a)
            {
                self.records.remove(&oldest);
            }
        }
        let record = self.records.entry(addr).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.duration_since(record.last) > FORGET_AFTER {
            record.failures = 0;
        }
        record.failures += 1;
        record.last = now;
        if record.failures > FREE_FAILURES {
            let doublings = (record.failures - FREE_FAILURES - 1).min(16);
            let penalty = BASE_PENALTY.saturating_mul(1 << doublings).min(MAX_PENALTY);
            record.blocked_until = Some(now + penalty);
        }
    }

    /// A right key from `addr`: its record is cleared.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.records.remove(&addr);
    }

    /// Drops addresses that have been quiet long enough.
    pub fn forget_stale(&mut self, now: Instant) {
        self.records
            .retain(|_, r| now.duration_since(r.last) <= FORGET_AFTER);
    }

    pub fn tracked(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn repeated_wrong_keys_slow_that_address_down_more_and_more() {
        let mut t = Throttle::new();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.failed(ip(1), now);
            assert_eq!(t.wait(ip(1), now), None);
        }
        t.failed(ip(1), now);
        assert_eq!(t.wait(ip(1), now), Some(BASE_PENALTY));
        t.failed(ip(1), now);
        assert_eq!(t.wait(ip(1), now), Some(BASE_PENALTY * 2));
        for _ in 0..30 {
            t.failed(ip(1), now);
        }
        assert_eq!(t.wait(ip(1), now), Some(MAX_PENALTY));
        assert_eq!(t.wait(ip(1), now + MAX_PENALTY), None, "the penalty ends");
    }

    #[test]
    fn other_addresses_and_the_right_key_are_not_affected() {
        let mut t = Throttle::new();
        let now = Instant::now();
        for _ in 0..10 {
            t.failed(ip(1), now);
        }
        assert!(t.wait(ip(1), now).is_some());
        assert_eq!(
            t.wait(ip(2), now),
            None,
            "the creator elsewhere is not locked out"
        );
        t.succeeded(ip(1));
        assert_eq!(t.wait(ip(1), now), None);
    }

    #[test]
    fn quiet_addresses_are_forgotten_and_the_map_is_bounded() {
        let mut t = Throttle::new();
        let now = Instant::now();
        for _ in 0..5 {
            t.failed(ip(1), now);
        }
        let later = now + FORGET_AFTER + Duration::from_secs(1);
        t.failed(ip(1), later);
        assert_eq!(t.wait(ip(1), later), None, "counting starts afresh");
        t.forget_stale(later + FORGET_AFTER + Duration::from_secs(1));
        assert_eq!(t.tracked(), 0);
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.tracked() <= MAX_ADDRESSES);
    }
}
