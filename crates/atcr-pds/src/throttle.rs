//! Throttling of failed logins, per client address and per account.
//!
//! Hand-written rather than `governor`: only *failures* count, and a caller
//! must be refused *before* the password is hashed, which a consume-on-check
//! rate limiter does not express. Fixed windows keep the state to one counter
//! per key, and the map is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure budgets.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Failures allowed per window.
    pub failures: u32,
    /// The window.
    pub window: Duration,
}

/// Most keys remembered; beyond, expired ones are dropped, then the oldest.
const MAX_KEYS: usize = 65_536;

/// Failed-login counters.
pub struct FailedLogins {
    per_address: Budget,
    per_account: Budget,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Default for FailedLogins {
    fn default() -> Self {
        Self::new(
            Budget {
                failures: 20,
                window: Duration::from_secs(60),
            },
            Budget {
                failures: 30,
                window: Duration::from_secs(300),
            },
        )
    }
}

impl FailedLogins {
    /// Counters with these budgets.
    pub fn new(per_address: Budget, per_account: Budget) -> Self {
        Self {
            per_address,
            per_account,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn keys(address: Option<std::net::IpAddr>, account: &str) -> [(String, bool); 2] {
        [
            (
                format!("a:{}", address.map(|a| a.to_string()).unwrap_or_default()),
                true,
            ),
            (format!("u:{}", account.to_ascii_lowercase()), false),
        ]
    }

    /// `Err(retry after)` when the address or the account has no failures
    /// left in its window: refuse without checking the password.
    pub fn check(&self, address: Option<std::net::IpAddr>, account: &str) -> Result<(), Duration> {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (key, is_addr) in Self::keys(address, account) {
            let b = if is_addr {
                self.per_address
            } else {
                self.per_account
            };
            if let Some((n, since)) = m.get(&key)
                && since.elapsed() < b.window
                && *n >= b.failures
            {
                return Err(b.window.saturating_sub(since.elapsed()));
            }
        }
        Ok(())
    }

    /// Records a failed login.
    pub fn failed(&self, address: Option<std::net::IpAddr>, account: &str) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_KEYS {
            let longest = self.per_address.window.max(self.per_account.window);
            m.retain(|_, (_, since)| since.elapsed() < longest);
            if m.len() >= MAX_KEYS {
                // Still full: keep the newest half.
                let mut ages: Vec<Instant> = m.values().map(|(_, s)| *s).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                m.retain(|_, (_, since)| *since >= cut);
            }
        }
        for (key, is_addr) in Self::keys(address, account) {
            let b = if is_addr {
                self.per_address
            } else {
                self.per_account
            };
            let e = m.entry(key).or_insert((0, Instant::now()));
            if e.1.elapsed() >= b.window {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    /// A successful login clears the account's count (not the address's).
    pub fn succeeded(&self, account: &str) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&format!("u:{}", account.to_ascii_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_per_address_and_account() {
        let t = FailedLogins::new(
            Budget {
                failures: 3,
                window: Duration::from_secs(60),
            },
            Budget {
                failures: 5,
                window: Duration::from_secs(60),
            },
        );
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(t.check(a, "alice").is_ok());
            t.failed(a, "alice");
        }
        assert!(t.check(a, "bob").is_err(), "the address is out of failures");
        assert!(t.check(b, "alice").is_ok());
        t.failed(b, "alice");
        t.failed(b, "alice");
        assert!(
            t.check(b, "alice").is_err(),
            "the account is out of failures"
        );
        assert!(t.check(b, "carol").is_ok());
        t.succeeded("alice");
        assert!(t.check(b, "alice").is_ok());
    }
}
