use crate::{ErrorCode, RegistryError};

/// Digest algorithms a registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// `sha256`
    Sha256,
    /// `sha512`
    Sha512,
}

impl DigestAlgorithm {
    /// The name in digest strings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

/// A content digest, `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: DigestAlgorithm,
    hex: String,
}

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let mut h = DigestHasher::new(DigestAlgorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// Parses a digest string strictly (known algorithm, lower-case hex of the right length).
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::new(ErrorCode::DigestInvalid, format!("invalid digest {s:?}"));
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let algorithm = match alg {
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            _ => {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("unsupported digest algorithm {alg:?}"),
                ));
            }
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        let mut h = DigestHasher::new(DigestAlgorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }
    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        Self::parse(s)
    }
}

/// Hashes a stream incrementally for a given algorithm.
///
/// Unlike `sha2::Sha256`, the state can be saved ([`DigestHasher::state`]) and
/// restored ([`DigestHasher::restore`]), so an upload session resumes after a
/// registry restart without re-reading what was already stored. It is built on
/// the `sha2` block functions (`compress256`/`compress512`, SHA-NI/AVX2 when
/// available); only the Merkle–Damgård buffering and padding are ours.
#[derive(Clone)]
pub struct DigestHasher {
    algorithm: DigestAlgorithm,
    state: [u64; 8],
    len: u128,
    buf: Vec<u8>,
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Magic prefix of a saved hasher state.
const STATE_MAGIC: &[u8; 4] = b"ADH1";

impl DigestHasher {
    /// A fresh hasher.
    pub fn new(alg: DigestAlgorithm) -> Self {
        let mut state = [0u64; 8];
        match alg {
            DigestAlgorithm::Sha256 => {
                for (s, v) in state.iter_mut().zip(SHA256_IV) {
                    *s = u64::from(v);
                }
            }
            DigestAlgorithm::Sha512 => state = SHA512_IV,
        }
        Self {
            algorithm: alg,
            state,
            len: 0,
            buf: Vec::with_capacity(128),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// True before any byte was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn block_len(&self) -> usize {
        match self.algorithm {
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }

    /// Compresses whole blocks (`blocks.len()` is a multiple of the block length).
    fn compress(&mut self, blocks: &[u8]) {
        use sha2::digest::consts::{U64, U128};
        use sha2::digest::generic_array::GenericArray;
        // compress256/512 take slices of GenericArray; batches are copied into
        // a small stack buffer (a memcpy is far cheaper than the hashing).
        const BATCH: usize = 32;
        match self.algorithm {
            DigestAlgorithm::Sha256 => {
                let mut st = [0u32; 8];
                for (d, s) in st.iter_mut().zip(self.state) {
                    *d = s as u32;
                }
                let mut scratch = [GenericArray::<u8, U64>::default(); BATCH];
                for batch in blocks.chunks(64 * BATCH) {
                    let n = batch.len() / 64;
                    for (dst, src) in scratch.iter_mut().zip(batch.chunks_exact(64)) {
                        dst.copy_from_slice(src);
                    }
                    sha2::compress256(&mut st, &scratch[..n]);
                }
                for (d, s) in self.state.iter_mut().zip(st) {
                    *d = u64::from(s);
                }
            }
            DigestAlgorithm::Sha512 => {
                let mut scratch = [GenericArray::<u8, U128>::default(); BATCH];
                for batch in blocks.chunks(128 * BATCH) {
                    let n = batch.len() / 128;
                    for (dst, src) in scratch.iter_mut().zip(batch.chunks_exact(128)) {
                        dst.copy_from_slice(src);
                    }
                    sha2::compress512(&mut self.state, &scratch[..n]);
                }
            }
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        let bl = self.block_len();
        self.len += data.len() as u128;
        if !self.buf.is_empty() {
            let take = (bl - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < bl {
                return;
            }
            let block = std::mem::take(&mut self.buf);
            self.compress(&block);
            self.buf = block;
            self.buf.clear();
        }
        let whole = data.len() - data.len() % bl;
        if whole > 0 {
            self.compress(&data[..whole]);
        }
        self.buf.extend_from_slice(&data[whole..]);
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> Digest {
        let bl = self.block_len();
        let len_bytes = if bl == 64 { 8 } else { 16 };
        let bit_len = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.buf);
        tail.push(0x80);
        while tail.len() % bl != bl - len_bytes {
            tail.push(0);
        }
        if bl == 64 {
            tail.extend_from_slice(&(bit_len as u64).to_be_bytes());
        } else {
            tail.extend_from_slice(&bit_len.to_be_bytes());
        }
        self.compress(&tail);
        let mut out = String::with_capacity(128);
        use std::fmt::Write as _;
        for s in self.state {
            if bl == 64 {
                let _ = write!(out, "{:08x}", s as u32);
            } else {
                let _ = write!(out, "{s:016x}");
            }
        }
        Digest {
            algorithm: self.algorithm,
            hex: out,
        }
    }

    /// The state as bytes, for [`DigestHasher::restore`].
    pub fn state(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 1 + 64 + 16 + 1 + self.buf.len());
        v.extend_from_slice(STATE_MAGIC);
        v.push(match self.algorithm {
            DigestAlgorithm::Sha256 => 1,
            DigestAlgorithm::Sha512 => 2,
        });
        for s in self.state {
            v.extend_from_slice(&s.to_be_bytes());
        }
        v.extend_from_slice(&self.len.to_be_bytes());
        v.push(self.buf.len() as u8);
        v.extend_from_slice(&self.buf);
        v
    }

    /// Restores a saved state; `None` when the bytes are not one.
    pub fn restore(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(STATE_MAGIC)?;
        let (&alg, rest) = rest.split_first()?;
        let algorithm = match alg {
            1 => DigestAlgorithm::Sha256,
            2 => DigestAlgorithm::Sha512,
            _ => return None,
        };
        if rest.len() < 64 + 16 + 1 {
            return None;
        }
        let mut state = [0u64; 8];
        for (i, s) in state.iter_mut().enumerate() {
            *s = u64::from_be_bytes(rest[i * 8..i * 8 + 8].try_into().ok()?);
        }
        let len = u128::from_be_bytes(rest[64..80].try_into().ok()?);
        let n = usize::from(rest[80]);
        let buf = rest.get(81..)?;
        let h = Self {
            algorithm,
            state,
            len,
            buf: buf.to_vec(),
        };
        if buf.len() != n || n >= h.block_len() || (len % h.block_len() as u128) as usize != n {
            return None;
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(alg: DigestAlgorithm, data: &[u8]) -> String {
        use sha2::Digest as _;
        let bytes = match alg {
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            Digest::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = DigestHasher::new(DigestAlgorithm::Sha512);
        h.update(b"abc");
        assert_eq!(h.finish().hex(), reference(DigestAlgorithm::Sha512, b"abc"));
    }

    proptest! {
        #[test]
        fn matches_sha2_in_any_split_and_survives_save_restore(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..6),
            sha512 in any::<bool>(),
        ) {
            let alg = if sha512 { DigestAlgorithm::Sha512 } else { DigestAlgorithm::Sha256 };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut h = DigestHasher::new(alg);
            let mut at = 0;
            for c in cuts {
                h.update(&data[at..c]);
                at = c;
                // Every cut also goes through a save/restore round trip.
                h = DigestHasher::restore(&h.state()).expect("restores");
            }
            h.update(&data[at..]);
            prop_assert_eq!(h.len(), data.len() as u64);
            let got = h.finish();
            prop_assert_eq!(got.hex(), reference(alg, &data));
        }
    }

    #[test]
    fn garbage_state_is_refused() {
        assert!(DigestHasher::restore(b"").is_none());
        assert!(DigestHasher::restore(b"ADH1\x03").is_none());
        let mut s = DigestHasher::new(DigestAlgorithm::Sha256).state();
        s.push(7); // buffer longer than its length byte says
        assert!(DigestHasher::restore(&s).is_none());
    }
}
