//! A node's lease on relaying a stream, as this node knows it: the fence every
//! playlist write of the stream passes.
//!
//! The lease itself lives in the database, on the database's clock
//! ([`super::registry::StreamRegistry::claim`], `renew`). Here it is mirrored
//! on this node's monotonic clock, conservatively: a renewal counts from the
//! moment it was *asked*, less a margin, so the node believes it holds the
//! lease no longer than the database grants it. A node that stalls (a long
//! pause, a partition) therefore stops writing playlists before another node
//! can take the stream, and once another node has, it never writes them again
//! ([`Fence::lose`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Taken off every lease: time the database may have counted before this
/// node's request reached it (clock rates drift too).
const MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Fence {
    lease: Duration,
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
}

impl Fence {
    /// A lease of `lease` granted by a claim asked for at `asked`.
    pub fn new(lease: Duration, asked: Instant) -> Fence {
        Fence {
            lease,
            valid_until: Mutex::new(asked + lease.saturating_sub(MARGIN)),
            lost: AtomicBool::new(false),
        }
    }

    /// The lease length this fence was granted.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The database renewed the lease; the renewal was asked for at `asked`.
    pub fn renewed(&self, asked: Instant) {
        if self.is_lost() {
            return;
        }
        let until = asked + self.lease.saturating_sub(MARGIN);
        let mut valid = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        *valid = (*valid).max(until);
    }

    /// Another node holds the stream now: for good.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Whether this node may write the stream's playlists now.
    pub fn holds(&self) -> bool {
        !self.is_lost()
            && Instant::now() < *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_less_long_than_the_lease_and_never_after_it_is_lost() {
        let lease = Duration::from_secs(10);
        let long_ago = Instant::now() - Duration::from_secs(60);
        let fence = Fence::new(lease, long_ago);
        assert!(!fence.holds(), "a claim asked a minute ago is over");
        fence.renewed(Instant::now());
        assert!(fence.holds());
        // An old renewal answered late never shortens a newer one.
        fence.renewed(long_ago);
        assert!(fence.holds());
        fence.lose();
        assert!(!fence.holds());
        fence.renewed(Instant::now());
        assert!(!fence.holds(), "lost is final");
        let short = Fence::new(Duration::from_millis(100), Instant::now());
        assert!(!short.holds(), "the margin is taken off");
    }
}
