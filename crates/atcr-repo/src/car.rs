//! CAR v1 (content-addressable archives): streaming reader and writer.
//!
//! The reader hashes every block against its CID as it reads (non-atproto
//! CIDs are rejected, never passed unchecked), bounds the header and every
//! block so memory stays small whatever the input, and reports truncation
//! inside a varint, CID or block as an error rather than a clean end.
//! Hand-written: `iroh-car` does not verify block hashes, and `atrium-repo`'s
//! `CarStore` skips the check for non-SHA-256 CIDs and needs random access.

use atcr_data::{Cid, Value, cbor, from_cbor, verify_block};
use std::io::{Read, Write};

/// Largest header accepted.
pub const MAX_HEADER_LEN: usize = 64 * 1024;
/// Default largest block accepted (records and MST nodes are far smaller).
pub const DEFAULT_MAX_BLOCK_LEN: usize = 2 * 1024 * 1024;

/// Errors reading a CAR.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// I/O failure of the underlying reader.
    #[error("CAR I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The input ended inside a header, varint, CID or block.
    #[error("CAR truncated: {0}")]
    Truncated(&'static str),
    /// Malformed header or section.
    #[error("malformed CAR: {0}")]
    Malformed(String),
    /// A block whose bytes do not hash to its CID.
    #[error("CAR block {0} does not match its CID")]
    HashMismatch(Cid),
    /// A header or block larger than the limit.
    #[error("CAR section of {0} bytes exceeds the limit")]
    TooLarge(u64),
}

/// Writes a CAR v1 stream.
pub struct CarWriter<W: Write> {
    out: W,
}

fn write_varint(out: &mut impl Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 10];
    let mut i = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[i] = b;
            i += 1;
            break;
        }
        buf[i] = b | 0x80;
        i += 1;
    }
    out.write_all(&buf[..i])
}

impl<W: Write> CarWriter<W> {
    /// Writes the header `{roots, version: 1}`.
    pub fn new(mut out: W, roots: &[Cid]) -> std::io::Result<Self> {
        let header: Value = [
            (
                "roots",
                Value::List(roots.iter().map(|c| Value::Link(*c)).collect()),
            ),
            ("version", Value::Integer(1)),
        ]
        .into_iter()
        .collect();
        let bytes = cbor::encode(&header);
        write_varint(&mut out, bytes.len() as u64)?;
        out.write_all(&bytes)?;
        Ok(Self { out })
    }

    /// Appends one block.
    pub fn write_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        let cid_bytes = cid.to_bytes();
        write_varint(&mut self.out, (cid_bytes.len() + data.len()) as u64)?;
        self.out.write_all(&cid_bytes)?;
        self.out.write_all(data)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole CAR into memory.
pub fn write_car<'a>(
    roots: &[Cid],
    blocks: impl IntoIterator<Item = (&'a Cid, &'a [u8])>,
) -> Vec<u8> {
    let mut w = CarWriter::new(Vec::new(), roots).expect("writing to a Vec cannot fail");
    for (cid, data) in blocks {
        w.write_block(cid, data)
            .expect("writing to a Vec cannot fail");
    }
    w.finish().expect("writing to a Vec cannot fail")
}

/// Reads a CAR v1 stream block by block, verifying each block's hash.
pub struct CarReader<R: Read> {
    input: R,
    roots: Vec<Cid>,
    max_block: usize,
    done: bool,
}

/// Reads a varint; `Ok(None)` on a clean end of input before its first byte.
fn read_varint(input: &mut impl Read) -> Result<Option<u64>, CarError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        let n = input.read(&mut b)?;
        if n == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(CarError::Truncated("inside a varint"))
            };
        }
        v |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if i > 0 && b[0] == 0 {
                return Err(CarError::Malformed("non-minimal varint".into()));
            }
            return Ok(Some(v));
        }
    }
    Err(CarError::Malformed("varint longer than 10 bytes".into()))
}

fn read_exact(input: &mut impl Read, len: usize, what: &'static str) -> Result<Vec<u8>, CarError> {
    let mut buf = Vec::with_capacity(len);
    input.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(CarError::Truncated(what));
    }
    Ok(buf)
}

impl<R: Read> CarReader<R> {
    /// Reads and checks the header.
    pub fn new(input: R) -> Result<Self, CarError> {
        Self::with_max_block(input, DEFAULT_MAX_BLOCK_LEN)
    }

    /// Like [`CarReader::new`] with a custom block-size limit.
    pub fn with_max_block(mut input: R, max_block: usize) -> Result<Self, CarError> {
        let len = read_varint(&mut input)?.ok_or(CarError::Truncated("empty input"))?;
        if len == 0 || len > MAX_HEADER_LEN as u64 {
            return Err(CarError::TooLarge(len));
        }
        let bytes = read_exact(&mut input, len as usize, "inside the header")?;
        let header = from_cbor(&bytes).map_err(|e| CarError::Malformed(format!("header: {e}")))?;
        if !matches!(&header, Value::Map(m) if m.len() == 2) {
            return Err(CarError::Malformed(
                "header must be exactly {version, roots}".into(),
            ));
        }
        if header.get("version").and_then(Value::as_i64) != Some(1) {
            return Err(CarError::Malformed("header version is not 1".into()));
        }
        let Some(Value::List(roots)) = header.get("roots") else {
            return Err(CarError::Malformed("header has no roots list".into()));
        };
        let roots = roots
            .iter()
            .map(|r| {
                // Repository CARs are rooted at a commit, a DAG-CBOR block: a
                // raw-codec CID of the same bytes would name another "commit".
                r.as_link()
                    .copied()
                    .filter(|c| c.codec() == atcr_data::DAG_CBOR)
                    .ok_or_else(|| CarError::Malformed("root is not a DAG-CBOR CID".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            input,
            roots,
            max_block,
            done: false,
        })
    }

    /// The header's roots.
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// The next verified block, `Ok(None)` at a clean end.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, CarError> {
        if self.done {
            return Ok(None);
        }
        let Some(len) = read_varint(&mut self.input)? else {
            self.done = true;
            return Ok(None);
        };
        if len > (self.max_block + 64) as u64 {
            return Err(CarError::TooLarge(len));
        }
        let section = read_exact(&mut self.input, len as usize, "inside a block")?;
        let mut cursor = std::io::Cursor::new(&section[..]);
        let cid = Cid::read_bytes(&mut cursor)
            .map_err(|e| CarError::Malformed(format!("block CID: {e}")))?;
        let data = section[cursor.position() as usize..].to_vec();
        if !verify_block(&cid, &data) {
            return Err(CarError::HashMismatch(cid));
        }
        Ok(Some((cid, data)))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(Cid, Vec<u8>), CarError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_block() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole CAR into a block map, returning its roots too.
pub fn read_car(bytes: &[u8]) -> Result<(Vec<Cid>, crate::BlockMap), CarError> {
    let mut reader = CarReader::new(bytes)?;
    let mut blocks = crate::BlockMap::new();
    while let Some((cid, data)) = reader.next_block()? {
        blocks.insert(cid, data);
    }
    Ok((reader.roots, blocks))
}
