//! Strict DAG-CBOR for the atproto data model.

use crate::{Cid, DataError, Value, is_blessed_cid};
use std::collections::BTreeMap;

/// Deepest nesting accepted when decoding; hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

const TAG_CID: u64 = 42;

/// DAG-CBOR map-key order: shorter keys first, then bytewise.
pub fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// Encodes `value` as canonical DAG-CBOR.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(&mut out, value);
    out
}

/// Appends the canonical DAG-CBOR encoding of `value` to `out`.
pub fn encode_into(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Integer(i) if *i >= 0 => write_head(out, 0, *i as u64),
        Value::Integer(i) => write_head(out, 1, (-1 - *i) as u64),
        Value::Bytes(b) => {
            write_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::String(s) => write_str(out, s),
        Value::Link(cid) => write_cid(out, cid),
        Value::List(items) => {
            write_head(out, 4, items.len() as u64);
            for item in items {
                encode_into(out, item);
            }
        }
        Value::Map(map) => {
            write_head(out, 5, map.len() as u64);
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| key_order(a.0, b.0));
            for (k, v) in entries {
                write_str(out, k);
                encode_into(out, v);
            }
        }
    }
}

/// Writes a CBOR text string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Writes a CBOR byte string.
pub fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// Writes a CID link (tag 42 over `0x00 || cid bytes`).
pub fn write_cid(out: &mut Vec<u8>, cid: &Cid) {
    let bytes = cid.to_bytes();
    write_head(out, 6, TAG_CID);
    write_head(out, 2, bytes.len() as u64 + 1);
    out.push(0);
    out.extend_from_slice(&bytes);
}

/// Writes a map header with `len` entries (caller writes keys in canonical order).
pub fn write_map_header(out: &mut Vec<u8>, len: usize) {
    write_head(out, 5, len as u64);
}

/// Writes an array header with `len` items.
pub fn write_array_header(out: &mut Vec<u8>, len: usize) {
    write_head(out, 4, len as u64);
}

/// Writes an unsigned integer.
pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    write_head(out, 0, v);
}

/// Decodes exactly one DAG-CBOR value from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, DataError> {
    let mut d = Decoder { buf: bytes, pos: 0 };
    let v = d.value(0)?;
    if d.pos != bytes.len() {
        return Err(d.err("trailing bytes after the value"));
    }
    Ok(v)
}

/// Decodes one DAG-CBOR value at the start of `bytes`, returning it and the
/// number of bytes it took (event-stream frames are two values back to back).
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), DataError> {
    let mut d = Decoder { buf: bytes, pos: 0 };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn err(&self, reason: &'static str) -> DataError {
        DataError::Cbor {
            offset: self.pos,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DataError> {
        if self.buf.len() - self.pos < n {
            return Err(self.err("unexpected end of input"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads an initial byte and its argument, enforcing the shortest form.
    fn head(&mut self) -> Result<(u8, u8, u64), DataError> {
        let b = self.take(1)?[0];
        let (major, ai) = (b >> 5, b & 0x1f);
        if major == 7 {
            // Simple values and floats: the caller inspects `ai`.
            return Ok((major, ai, 0));
        }
        let arg = match ai {
            0..=23 => u64::from(ai),
            24 => {
                let v = u64::from(self.take(1)?[0]);
                if v < 24 {
                    return Err(self.err("non-minimal integer encoding"));
                }
                v
            }
            25 => {
                let v = u64::from(u16::from_be_bytes(
                    self.take(2)?.try_into().expect("2 bytes"),
                ));
                if v <= 0xff {
                    return Err(self.err("non-minimal integer encoding"));
                }
                v
            }
            26 => {
                let v = u64::from(u32::from_be_bytes(
                    self.take(4)?.try_into().expect("4 bytes"),
                ));
                if v <= 0xffff {
                    return Err(self.err("non-minimal integer encoding"));
                }
                v
            }
            27 => {
                let v = u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                if v <= 0xffff_ffff {
                    return Err(self.err("non-minimal integer encoding"));
                }
                v
            }
            31 => return Err(self.err("indefinite length is not allowed")),
            _ => return Err(self.err("reserved additional information")),
        };
        Ok((major, ai, arg))
    }

    fn len(&self, arg: u64, min_item: usize) -> Result<usize, DataError> {
        let n = usize::try_from(arg).map_err(|_| self.err("length too large"))?;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(self.err("declared length exceeds input"));
        }
        Ok(n)
    }

    fn text(&mut self, arg: u64) -> Result<String, DataError> {
        let n = self.len(arg, 1)?;
        let start = self.pos;
        let raw = self.take(n)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(DataError::Cbor {
                offset: start,
                reason: "invalid UTF-8 in text string",
            }),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, DataError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let (major, ai, arg) = self.head()?;
        match major {
            0 => i64::try_from(arg)
                .map(Value::Integer)
                .map_err(|_| self.err("integer out of 64-bit signed range")),
            1 => i64::try_from(arg)
                .map(|n| Value::Integer(-1 - n))
                .map_err(|_| self.err("integer out of 64-bit signed range")),
            2 => {
                let n = self.len(arg, 1)?;
                Ok(Value::Bytes(self.take(n)?.to_vec()))
            }
            3 => self.text(arg).map(Value::String),
            4 => {
                let n = self.len(arg, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Ok(Value::List(items))
            }
            5 => {
                let n = self.len(arg, 2)?;
                let mut map = BTreeMap::new();
                let mut prev: Option<String> = None;
                for _ in 0..n {
                    let key_at = self.pos;
                    let (kmajor, _, karg) = self.head()?;
                    if kmajor != 3 {
                        return Err(DataError::Cbor {
                            offset: key_at,
                            reason: "map key is not a text string",
                        });
                    }
                    let key = self.text(karg)?;
                    if let Some(p) = &prev {
                        match key_order(p, &key) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                return Err(DataError::Cbor {
                                    offset: key_at,
                                    reason: "duplicate map key",
                                });
                            }
                            std::cmp::Ordering::Greater => {
                                return Err(DataError::Cbor {
                                    offset: key_at,
                                    reason: "map keys not in canonical order",
                                });
                            }
                        }
                    }
                    let v = self.value(depth + 1)?;
                    prev = Some(key.clone());
                    map.insert(key, v);
                }
                Ok(Value::Map(map))
            }
            6 => {
                if arg != TAG_CID {
                    return Err(self.err("only tag 42 (CID) is allowed"));
                }
                let at = self.pos;
                let (bmajor, _, barg) = self.head()?;
                if bmajor != 2 {
                    return Err(DataError::Cbor {
                        offset: at,
                        reason: "tag 42 must wrap a byte string",
                    });
                }
                let n = self.len(barg, 1)?;
                let raw = self.take(n)?;
                decode_cid_bytes(raw)
                    .map(Value::Link)
                    .map_err(|reason| DataError::Cbor { offset: at, reason })
            }
            7 => match ai {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 => Ok(Value::Null),
                25..=27 => Err(self.err("floats are not allowed")),
                _ => Err(self.err("unsupported simple value")),
            },
            _ => unreachable!("major type is three bits"),
        }
    }
}

/// Decodes the payload of a tag-42 byte string (`0x00 || binary CID`).
fn decode_cid_bytes(raw: &[u8]) -> Result<Cid, &'static str> {
    let (prefix, rest) = raw.split_first().ok_or("empty CID bytes")?;
    if *prefix != 0 {
        return Err("CID bytes must start with the identity multibase prefix 0x00");
    }
    let mut cursor = std::io::Cursor::new(rest);
    let cid = Cid::read_bytes(&mut cursor).map_err(|_| "malformed CID")?;
    if cursor.position() as usize != rest.len() {
        return Err("trailing bytes after CID");
    }
    if !is_blessed_cid(&cid) {
        return Err("CID is not v1 dag-cbor/raw sha2-256");
    }
    Ok(cid)
}

/// A low-level strict reader for fixed-shape DAG-CBOR (MST nodes, commits):
/// the same shortest-form and bounds rules as [`decode`], without building a
/// [`Value`]. Callers expect exact keys in canonical order, which makes the
/// accepted encodings exactly the canonical ones.
pub struct Reader<'a> {
    d: Decoder<'a>,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            d: Decoder { buf: bytes, pos: 0 },
        }
    }

    fn expect_major(&mut self, want: u8, what: &'static str) -> Result<u64, DataError> {
        let at = self.d.pos;
        let (major, _, arg) = self.d.head()?;
        if major != want {
            return Err(DataError::Cbor {
                offset: at,
                reason: what,
            });
        }
        Ok(arg)
    }

    /// A map header; returns the entry count.
    pub fn map_header(&mut self) -> Result<usize, DataError> {
        let arg = self.expect_major(5, "expected a map")?;
        self.d.len(arg, 2)
    }

    /// An array header; returns the item count.
    pub fn array_header(&mut self) -> Result<usize, DataError> {
        let arg = self.expect_major(4, "expected an array")?;
        self.d.len(arg, 1)
    }

    /// A text string that must equal `key` (a map key in canonical position).
    pub fn key(&mut self, key: &'static str) -> Result<(), DataError> {
        let at = self.d.pos;
        let arg = self.expect_major(3, "expected a text key")?;
        let n = self.d.len(arg, 1)?;
        if self.d.take(n)? != key.as_bytes() {
            return Err(DataError::Cbor {
                offset: at,
                reason: "unexpected or out-of-order map key",
            });
        }
        Ok(())
    }

    /// A byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DataError> {
        let arg = self.expect_major(2, "expected a byte string")?;
        let n = self.d.len(arg, 1)?;
        let start = self.d.pos;
        self.d.take(n)?;
        Ok(&self.d.buf[start..start + n])
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, DataError> {
        self.expect_major(0, "expected an unsigned integer")
    }

    /// A CID link, or `None` for null.
    pub fn link_or_null(&mut self) -> Result<Option<Cid>, DataError> {
        if self.d.buf.get(self.d.pos) == Some(&0xf6) {
            self.d.pos += 1;
            return Ok(None);
        }
        self.link().map(Some)
    }

    /// A CID link.
    pub fn link(&mut self) -> Result<Cid, DataError> {
        let tag = self.expect_major(6, "expected a CID link")?;
        if tag != TAG_CID {
            return Err(self.d.err("only tag 42 (CID) is allowed"));
        }
        let at = self.d.pos;
        let raw = self.bytes()?;
        decode_cid_bytes(raw).map_err(|reason| DataError::Cbor { offset: at, reason })
    }

    /// Checks that the whole input was consumed.
    pub fn finish(self) -> Result<(), DataError> {
        if self.d.pos != self.d.buf.len() {
            return Err(self.d.err("trailing bytes after the value"));
        }
        Ok(())
    }
}
