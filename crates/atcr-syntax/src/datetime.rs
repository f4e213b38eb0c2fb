use crate::SyntaxError;

/// An atproto datetime: RFC 3339 with upper-case `T` and `Z`, seconds
/// required, an explicit offset (`Z` or `±HH:MM`, never `-00:00`).
///
/// Keeps the original string (records are signed over it) and the instant it
/// denotes, in seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Datetime {
    raw: String,
    unix_seconds: i64,
    nanos: u32,
}

const KIND: &str = "datetime";

/// Validates the datetime *syntax* only (shape of every field), as the
/// `datetime_syntax_*` vectors define it.
pub fn validate_datetime_syntax(s: &str) -> Result<(), SyntaxError> {
    lex(s).map(|_| ())
}

struct Fields {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_minutes: i64,
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
}

fn lex(s: &str) -> Result<Fields, SyntaxError> {
    let b = s.as_bytes();
    let bad = || SyntaxError::new(KIND, "not of the form YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)");
    if b.len() < 20 || b.len() > 64 {
        return Err(bad());
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let year = digits(&b[0..4]).ok_or_else(bad)?;
    let month = digits(&b[5..7]).ok_or_else(bad)?;
    let day = digits(&b[8..10]).ok_or_else(bad)?;
    let hour = digits(&b[11..13]).ok_or_else(bad)?;
    let minute = digits(&b[14..16]).ok_or_else(bad)?;
    let second = digits(&b[17..19]).ok_or_else(bad)?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let frac = &b[start..end];
        if frac.is_empty() || frac.len() > 20 {
            return Err(bad());
        }
        for (k, d) in frac.iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
        i = end;
    }
    let tz = &b[i..];
    let offset_minutes = match tz {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2]).ok_or_else(bad)?;
            let m = digits(&[*m1, *m2]).ok_or_else(bad)?;
            if *sign == b'-' && h == 0 && m == 0 {
                return Err(SyntaxError::new(KIND, "offset -00:00 is not allowed"));
            }
            let v = i64::from(h * 60 + m);
            if *sign == b'-' { -v } else { v }
        }
        _ => return Err(bad()),
    };
    Ok(Fields {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_minutes,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Seconds from the epoch to 0000-01-01T00:00:00Z, the earliest instant accepted.
const MIN_UNIX_SECONDS: i64 = -62_167_219_200;

impl Datetime {
    /// Parses strictly: syntax, then a real calendar date and time of day,
    /// and an instant no earlier than year 0000 in UTC.
    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        let f = lex(s)?;
        if !(1..=12).contains(&f.month) || f.day == 0 || f.day > days_in_month(f.year, f.month) {
            return Err(SyntaxError::new(KIND, "no such date"));
        }
        // 60 allows a leap second.
        if f.hour > 23 || f.minute > 59 || f.second > 60 {
            return Err(SyntaxError::new(KIND, "no such time of day"));
        }
        if f.offset_minutes.abs() >= 24 * 60 {
            return Err(SyntaxError::new(KIND, "offset out of range"));
        }
        let days = days_from_civil(f.year, f.month, f.day);
        let secs = days * 86_400
            + i64::from(f.hour) * 3600
            + i64::from(f.minute) * 60
            + i64::from(f.second)
            - f.offset_minutes * 60;
        if secs < MIN_UNIX_SECONDS {
            return Err(SyntaxError::new(KIND, "before year 0000 in UTC"));
        }
        Ok(Self {
            raw: s.to_owned(),
            unix_seconds: secs,
            nanos: f.nanos,
        })
    }

    /// Formats a Unix time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the canonical form we write).
    pub fn from_unix_millis(ms: i64) -> Self {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        // civil_from_days
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let raw = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        );
        Self {
            raw,
            unix_seconds: secs,
            nanos: millis * 1_000_000,
        }
    }

    /// The current time.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self::from_unix_millis(ms)
    }

    /// The original string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// Seconds since the Unix epoch (may be negative).
    pub fn unix_seconds(&self) -> i64 {
        self.unix_seconds
    }
    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.unix_seconds * 1000 + i64::from(self.nanos / 1_000_000)
    }
}

impl PartialOrd for Datetime {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Datetime {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.unix_seconds, self.nanos)
            .cmp(&(other.unix_seconds, other.nanos))
            .then_with(|| self.raw.cmp(&other.raw))
    }
}

impl std::str::FromStr for Datetime {
    type Err = SyntaxError;
    fn from_str(s: &str) -> Result<Self, SyntaxError> {
        Self::parse(s)
    }
}
impl std::fmt::Display for Datetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}
impl serde::Serialize for Datetime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}
impl<'de> serde::Deserialize<'de> for Datetime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}
