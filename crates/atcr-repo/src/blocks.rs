//! Block storage seen by the repository code.

use atcr_data::Cid;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A failure of the backing store (I/O, database), as opposed to a missing block.
#[derive(Debug, Clone, thiserror::Error)]
#[error("block store: {0}")]
pub struct StoreError(pub String);

/// Read access to content-addressed blocks.
///
/// Synchronous on purpose: repository operations are CPU-bound walks over
/// small blocks; async callers run them on a blocking thread.
pub trait BlockSource {
    /// The block's bytes, or `None` if the store does not have it.
    fn get_block(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError>;
}

/// An in-memory block map; also the set of blocks a commit or proof carries.
#[derive(Debug, Clone, Default)]
pub struct BlockMap {
    blocks: HashMap<Cid, Arc<[u8]>>,
}

impl BlockMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a block (the caller vouches that `cid` matches `bytes`).
    pub fn insert(&mut self, cid: Cid, bytes: impl Into<Arc<[u8]>>) {
        self.blocks.insert(cid, bytes.into());
    }
    /// Adds every block of `other`.
    pub fn extend(&mut self, other: &BlockMap) {
        for (c, b) in &other.blocks {
            self.blocks.insert(*c, b.clone());
        }
    }
    /// Looks a block up.
    pub fn get(&self, cid: &Cid) -> Option<&Arc<[u8]>> {
        self.blocks.get(cid)
    }
    /// Whether the block is present.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Removes a block.
    pub fn remove(&mut self, cid: &Cid) -> Option<Arc<[u8]>> {
        self.blocks.remove(cid)
    }
    /// Iterates over `(cid, bytes)` in unspecified order.
    pub fn iter(&self) -> impl Iterator<Item = (&Cid, &Arc<[u8]>)> {
        self.blocks.iter()
    }
    /// The blocks sorted by CID string (a deterministic CAR order).
    pub fn sorted(&self) -> BTreeMap<String, (Cid, Arc<[u8]>)> {
        self.blocks
            .iter()
            .map(|(c, b)| (c.to_string(), (*c, b.clone())))
            .collect()
    }
}

impl BlockSource for BlockMap {
    fn get_block(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        Ok(self.blocks.get(cid).cloned())
    }
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn get_block(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        (**self).get_block(cid)
    }
}

/// Reads through a primary source, then a fallback (for example the blocks a
/// commit is about to write, then the database).
pub struct Layered<'a, A: ?Sized, B: ?Sized>(pub &'a A, pub &'a B);

impl<A: BlockSource + ?Sized, B: BlockSource + ?Sized> BlockSource for Layered<'_, A, B> {
    fn get_block(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        match self.0.get_block(cid)? {
            Some(b) => Ok(Some(b)),
            None => self.1.get_block(cid),
        }
    }
}
