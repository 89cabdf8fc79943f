//! Failed logins slowed per client address: each failure from an address is answered a
//! little later than the one before, so guessing passwords from one place is slow, while
//! every other address (and a login that succeeds) is not delayed at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The delay of an address's second failure in a row; it doubles with each failure after.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// How long an address's failures are remembered after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Addresses remembered at once; past it the ones forgotten by time are dropped first, then all.
const MAX_ADDRESSES: usize = 100_000;

/// The failures of each address that failed lately.
#[derive(Default)]
pub struct FailedLogins {
    addresses: Mutex<HashMap<IpAddr, Failures>>,
    /// Whether any address is remembered: a login that succeeds (every HTTP request) takes
    /// the lock only then.
    any: AtomicBool,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl FailedLogins {
    /// Records a failure from `address` and answers how long to wait before answering it: none
    /// for the first, then 100 ms, doubling to at most 5 s.
    pub fn failed(&self, address: IpAddr) -> Duration {
        let now = Instant::now();
        let mut addresses = self.addresses();
        if addresses.len() >= MAX_ADDRESSES {
            addresses.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if addresses.len() >= MAX_ADDRESSES {
                addresses.clear();
            }
        }
        let failures = addresses
            .entry(address)
            .or_insert(Failures { count: 0, last: now });
        if now.duration_since(failures.last) >= FORGET_AFTER {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        let delay = delay_after(failures.count);
        self.any.store(true, Ordering::Relaxed);
        delay
    }

    /// Forgets the failures of `address`, which just logged in.
    pub fn succeeded(&self, address: IpAddr) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut addresses = self.addresses();
        addresses.remove(&address);
        self.any.store(!addresses.is_empty(), Ordering::Relaxed);
    }

    fn addresses(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The delay of the `count`th failure in a row.
fn delay_after(count: u32) -> Duration {
    match count {
        0 | 1 => Duration::ZERO,
        n => FIRST_DELAY.saturating_mul(1 << (n - 2).min(16)).min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_from_an_address_waits_longer_and_other_addresses_not_at_all() {
        let failed = FailedLogins::default();
        let guesser: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let delays: Vec<_> = (0..8).map(|_| failed.failed(guesser).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 5000]);
        assert_eq!(
            failed.failed(other),
            Duration::ZERO,
            "another address is not slowed"
        );
        failed.succeeded(guesser);
        assert_eq!(
            failed.failed(guesser),
            Duration::ZERO,
            "a login forgets the failures"
        );
        failed.succeeded(guesser);
        failed.succeeded(other);
        failed.failed(guesser);
        assert_eq!(
            failed.failed(guesser).as_millis(),
            100,
            "failures are remembered again once every address was forgotten"
        );
    }
}
