use crate::{SyntaxError, string_newtype};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A timestamp identifier: 13 characters of sortable base32 encoding a
/// 53-bit microsecond timestamp and a 10-bit clock id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(String);

string_newtype!(Tid, validate_tid);

const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// Validates TID syntax.
pub fn validate_tid(s: &str) -> Result<(), SyntaxError> {
    const KIND: &str = "TID";
    let b = s.as_bytes();
    if b.len() != 13 {
        return Err(SyntaxError::new(KIND, "must be 13 characters"));
    }
    if !b.iter().all(|c| ALPHABET.contains(c)) {
        return Err(SyntaxError::new(KIND, "disallowed character"));
    }
    // The top bit must be zero: the first character is one of 2-7, a-j.
    if !b"234567abcdefghij".contains(&b[0]) {
        return Err(SyntaxError::new(KIND, "high bit set"));
    }
    Ok(())
}

impl Tid {
    /// Builds a TID from a microsecond timestamp and a clock id (10 bits).
    pub fn from_parts(micros: u64, clock_id: u16) -> Self {
        let v = ((micros & ((1 << 53) - 1)) << 10) | u64::from(clock_id & 0x3ff);
        Self::from_u64(v)
    }

    fn from_u64(mut v: u64) -> Self {
        let mut out = [0u8; 13];
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(v & 31) as usize];
            v >>= 5;
        }
        Self(out.iter().map(|&b| b as char).collect())
    }

    /// The integer value of this TID.
    pub fn to_u64(&self) -> u64 {
        self.0.bytes().fold(0u64, |acc, c| {
            let d = ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u64;
            (acc << 5) | d
        })
    }

    /// The microsecond timestamp part.
    pub fn timestamp_micros(&self) -> u64 {
        self.to_u64() >> 10
    }
}

/// A strictly monotonic TID generator.
///
/// `Tid::now`-style generators that read the clock once can repeat within one
/// microsecond or go backwards with the wall clock; this one never does: each
/// value is `max(now, last + 1)`, across threads.
#[derive(Debug)]
pub struct TidClock {
    last: AtomicU64,
    clock_id: u16,
}

impl TidClock {
    /// A clock with a random 10-bit clock id.
    pub fn new() -> Self {
        use rand_core::RngCore;
        let id = (rand_core::OsRng.next_u32() & 0x3ff) as u16;
        Self::with_clock_id(id)
    }

    /// A clock with a fixed clock id (tests, reproducible output).
    pub fn with_clock_id(clock_id: u16) -> Self {
        Self {
            last: AtomicU64::new(0),
            clock_id: clock_id & 0x3ff,
        }
    }

    /// The next TID, strictly greater than every TID this clock returned.
    pub fn next(&self) -> Tid {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.next_after_micros(now)
    }

    /// The next TID given the current time in microseconds.
    pub fn next_after_micros(&self, now: u64) -> Tid {
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = now.max(prev + 1);
            match self.last.compare_exchange_weak(
                prev,
                candidate,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Tid::from_parts(candidate, self.clock_id),
                Err(actual) => prev = actual,
            }
        }
    }

    /// Makes every later TID sort after `tid` (for example a repository's last rev).
    pub fn observe(&self, tid: &Tid) {
        self.last
            .fetch_max(tid.timestamp_micros(), Ordering::AcqRel);
    }
}

impl Default for TidClock {
    fn default() -> Self {
        Self::new()
    }
}
