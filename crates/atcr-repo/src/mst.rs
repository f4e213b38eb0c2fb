//! The Merkle Search Tree of atproto repositories (fanout 4).
//!
//! The tree is a pure function of its key set: a key's layer is the number
//! of leading zero 2-bit groups of SHA-256(key), a node holds the keys of its
//! layer in order, and the gaps between them point to subtrees one layer
//! down (with entry-less intermediate nodes where a gap only holds lower
//! keys). Inserts split the subtree in the key's gap, deletes merge the two
//! subtrees beside the key, and the root is trimmed to the highest layer in
//! use, so the root CID does not depend on the order of operations.
//!
//! Nodes load lazily from a [`BlockSource`] and keep their encoded bytes and
//! CID until they change; [`Mst::commit`] re-encodes only changed nodes and
//! returns exactly those blocks.
//!
//! Written here rather than taken from `atrium-repo` because that crate has
//! no covering proofs, leaves superseded nodes behind, panics on unexpected
//! CID codecs, and has no bounds-checked (sound) absence proofs.

use crate::blocks::{BlockMap, BlockSource, StoreError};
use atcr_data::{Cid, cbor, cid_for_cbor, verify_block};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Errors from reading or changing an MST.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MstError {
    /// A node the walk needs is not in the block source.
    #[error("missing MST block {0}")]
    MissingBlock(Cid),
    /// A node that does not decode or breaks the tree's invariants.
    #[error("malformed MST node {cid}: {reason}")]
    Malformed {
        /// The node's CID.
        cid: Cid,
        /// What is wrong.
        reason: String,
    },
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key the tree cannot hold (empty or longer than 1024 bytes).
    #[error("invalid MST key {0:?}")]
    InvalidKey(String),
    /// Proof building on a tree with changes not yet committed.
    #[error("MST has uncommitted changes; call commit() first")]
    Uncommitted,
}

type Result<T> = std::result::Result<T, MstError>;

/// The layer of `key`: leading zero bits of SHA-256(key), counted in pairs.
pub fn key_height(key: &str) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut zeros = 0;
    for b in digest {
        if b == 0 {
            zeros += 8;
            continue;
        }
        zeros += b.leading_zeros();
        break;
    }
    zeros / 2
}

/// Length in bytes of the common prefix of two keys.
pub fn common_prefix_len(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// Longest key accepted (the atproto repository path limit).
pub const MAX_KEY_LEN: usize = 1024;

/// A subtree pointer. Loaded subtrees are shared copy-on-write, so cloning a
/// tree (to make a multi-write commit all-or-nothing) costs one root node.
#[derive(Debug, Clone)]
enum Link {
    Stored(Cid),
    Loaded(Arc<Node>),
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: Cid,
    right: Option<Link>,
}

#[derive(Debug, Clone)]
struct Node {
    layer: u32,
    left: Option<Link>,
    entries: Vec<Entry>,
    /// CID and encoding, while the node is unchanged.
    cached: Option<(Cid, Arc<[u8]>)>,
}

impl Node {
    fn empty(layer: u32) -> Self {
        Self {
            layer,
            left: None,
            entries: vec![],
            cached: None,
        }
    }
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.left.is_none()
    }
    /// Index of the first entry whose key is `>= key`.
    fn gap_index(&self, key: &str) -> usize {
        self.entries.partition_point(|e| e.key.as_str() < key)
    }
    fn slot(&self, i: usize) -> &Option<Link> {
        if i == 0 {
            &self.left
        } else {
            &self.entries[i - 1].right
        }
    }
    fn slot_mut(&mut self, i: usize) -> &mut Option<Link> {
        if i == 0 {
            &mut self.left
        } else {
            &mut self.entries[i - 1].right
        }
    }
    fn child_layer(&self) -> Result<u32> {
        self.layer
            .checked_sub(1)
            .ok_or_else(|| self.malformed("layer-0 node has a subtree"))
    }
    fn malformed(&self, reason: &str) -> MstError {
        let cid = self
            .cached
            .as_ref()
            .map(|c| c.0)
            .unwrap_or_else(|| cid_for_cbor(b""));
        MstError::Malformed {
            cid,
            reason: reason.into(),
        }
    }
}

fn loaded(n: Node) -> Link {
    Link::Loaded(Arc::new(n))
}

fn nonempty(n: Node) -> Option<Node> {
    if n.is_empty() { None } else { Some(n) }
}

/// Reads and decodes a node block, checking its hash and invariants.
/// `layer` is the layer the parent implies (`None` for the root).
fn read_node(cid: &Cid, layer: Option<u32>, store: &dyn BlockSource) -> Result<Node> {
    let bytes = store.get_block(cid)?.ok_or(MstError::MissingBlock(*cid))?;
    if !verify_block(cid, &bytes) {
        return Err(MstError::Malformed {
            cid: *cid,
            reason: "block does not hash to its CID".into(),
        });
    }
    decode_node(cid, bytes, layer)
}

fn decode_node(cid: &Cid, bytes: Arc<[u8]>, layer: Option<u32>) -> Result<Node> {
    let bad = |reason: &str| MstError::Malformed {
        cid: *cid,
        reason: reason.into(),
    };
    let cbor_err = |e: atcr_data::DataError| MstError::Malformed {
        cid: *cid,
        reason: e.to_string(),
    };
    // Canonical DAG-CBOR gives a node exactly one encoding: {e: [{k, p, t, v}…], l},
    // keys in this order. Reading that shape directly is as strict as a full
    // decode and avoids building a generic value per node.
    let mut r = cbor::Reader::new(&bytes);
    if r.map_header().map_err(cbor_err)? != 2 {
        return Err(bad("node must have exactly the fields e and l"));
    }
    r.key("e").map_err(cbor_err)?;
    let count = r.array_header().map_err(cbor_err)?;
    let mut entries: Vec<Entry> = Vec::with_capacity(count);
    let mut prev_key: Vec<u8> = vec![];
    for _ in 0..count {
        if r.map_header().map_err(cbor_err)? != 4 {
            return Err(bad("entry must have exactly k, p, t, v"));
        }
        r.key("k").map_err(cbor_err)?;
        let suffix = r.bytes().map_err(cbor_err)?;
        r.key("p").map_err(cbor_err)?;
        let p = r.uint().map_err(cbor_err)?;
        r.key("t").map_err(cbor_err)?;
        let right = r.link_or_null().map_err(cbor_err)?;
        if right.is_some_and(|c| c.codec() != atcr_data::DAG_CBOR) {
            return Err(bad("subtree link is not a DAG-CBOR CID"));
        }
        let right = right.map(Link::Stored);
        r.key("v").map_err(cbor_err)?;
        let value = r.link().map_err(cbor_err)?;
        let p = usize::try_from(p)
            .ok()
            .filter(|p| *p <= prev_key.len())
            .ok_or_else(|| bad("prefix length out of range"))?;
        if entries.is_empty() && p != 0 {
            return Err(bad("first entry must have prefix length 0"));
        }
        let mut key = Vec::with_capacity(p + suffix.len());
        key.extend_from_slice(&prev_key[..p]);
        key.extend_from_slice(suffix);
        // Prefix compression is maximal, so one key set has one encoding.
        let shared = prev_key
            .iter()
            .zip(&key)
            .take_while(|(a, b)| a == b)
            .count();
        if !entries.is_empty() && p != shared {
            return Err(bad("prefix compression is not maximal"));
        }
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(bad("key empty or too long"));
        }
        if !entries.is_empty() && key <= prev_key {
            return Err(bad("keys not strictly increasing"));
        }
        let key_str = std::str::from_utf8(&key)
            .map_err(|_| bad("key is not UTF-8"))?
            .to_owned();
        prev_key = key;
        entries.push(Entry {
            key: key_str,
            value,
            right,
        });
    }
    r.key("l").map_err(cbor_err)?;
    let left = r.link_or_null().map_err(cbor_err)?;
    if left.is_some_and(|c| c.codec() != atcr_data::DAG_CBOR) {
        return Err(bad("subtree link is not a DAG-CBOR CID"));
    }
    let left = left.map(Link::Stored);
    r.finish().map_err(cbor_err)?;
    let node_layer = match entries.first() {
        Some(first) => {
            let h = key_height(&first.key);
            if entries.iter().any(|e| key_height(&e.key) != h) {
                return Err(bad("entries of different layers in one node"));
            }
            if layer.is_some_and(|l| l != h) {
                return Err(bad("node is not at the layer its parent implies"));
            }
            h
        }
        None => match (layer, &left) {
            (Some(l), Some(_)) => l,
            (None, None) => 0,
            (None, Some(_)) => {
                return Err(bad("root has no entries but a subtree (untrimmed root)"));
            }
            (Some(_), None) => return Err(bad("empty non-root node")),
        },
    };
    if node_layer == 0 && (left.is_some() || entries.iter().any(|e| e.right.is_some())) {
        return Err(bad("layer-0 node has a subtree"));
    }
    Ok(Node {
        layer: node_layer,
        left,
        entries,
        cached: Some((*cid, bytes)),
    })
}

fn take_node(link: Link, layer: u32, store: &dyn BlockSource) -> Result<Node> {
    match link {
        Link::Loaded(n) => Ok(Arc::try_unwrap(n).unwrap_or_else(|shared| (*shared).clone())),
        Link::Stored(cid) => read_node(&cid, Some(layer), store),
    }
}

fn load<'a>(link: &'a mut Link, layer: u32, store: &dyn BlockSource) -> Result<&'a mut Node> {
    if let Link::Stored(cid) = link {
        let node = read_node(cid, Some(layer), store)?;
        *link = loaded(node);
    }
    match link {
        Link::Loaded(n) => Ok(Arc::make_mut(n)),
        Link::Stored(_) => unreachable!("just loaded"),
    }
}

/// A node borrowed from the in-memory tree or read from the store for one walk.
enum NodeRef<'a> {
    Borrowed(&'a Node),
    Owned(Box<Node>),
}

impl NodeRef<'_> {
    fn node(&self) -> &Node {
        match self {
            NodeRef::Borrowed(n) => n,
            NodeRef::Owned(n) => n,
        }
    }
}

fn child_ref<'a>(
    parent: &NodeRef<'a>,
    i: usize,
    store: &dyn BlockSource,
) -> Result<Option<NodeRef<'a>>> {
    let layer = parent.node().layer;
    match parent {
        NodeRef::Borrowed(n) => match n.slot(i) {
            None => Ok(None),
            Some(Link::Loaded(c)) => Ok(Some(NodeRef::Borrowed(c))),
            Some(Link::Stored(cid)) => Ok(Some(NodeRef::Owned(Box::new(read_node(
                cid,
                Some(n.child_layer()?),
                store,
            )?)))),
        },
        NodeRef::Owned(n) => match n.slot(i) {
            None => Ok(None),
            Some(Link::Loaded(c)) => Ok(Some(NodeRef::Owned(Box::new((**c).clone())))),
            Some(Link::Stored(cid)) => {
                let l = layer
                    .checked_sub(1)
                    .ok_or_else(|| n.malformed("layer-0 node has a subtree"))?;
                Ok(Some(NodeRef::Owned(Box::new(read_node(
                    cid,
                    Some(l),
                    store,
                )?))))
            }
        },
    }
}

fn insert_into(
    node: &mut Node,
    key: String,
    value: Cid,
    h: u32,
    store: &dyn BlockSource,
) -> Result<Option<Cid>> {
    let i = node.gap_index(&key);
    if i < node.entries.len() && node.entries[i].key == key {
        if node.entries[i].value == value {
            return Ok(Some(value));
        }
        node.cached = None;
        return Ok(Some(std::mem::replace(&mut node.entries[i].value, value)));
    }
    node.cached = None;
    if h == node.layer {
        let (lo, hi) = match node.slot_mut(i).take() {
            Some(link) => {
                let child_layer = node.child_layer()?;
                split(take_node(link, child_layer, store)?, &key, store)?
            }
            None => (None, None),
        };
        *node.slot_mut(i) = lo.map(loaded);
        node.entries.insert(
            i,
            Entry {
                key,
                value,
                right: hi.map(loaded),
            },
        );
        return Ok(None);
    }
    let child_layer = node.child_layer()?;
    let slot = node.slot_mut(i);
    let link = slot.get_or_insert_with(|| loaded(Node::empty(child_layer)));
    let child = load(link, child_layer, store)?;
    insert_into(child, key, value, h, store)
}

/// Splits `node` into the parts below and above `key` (which it must not hold).
fn split(
    mut node: Node,
    key: &str,
    store: &dyn BlockSource,
) -> Result<(Option<Node>, Option<Node>)> {
    let layer = node.layer;
    let i = node.gap_index(key);
    let right_entries = node.entries.split_off(i);
    let (sub_lo, sub_hi) = match node.slot_mut(i).take() {
        Some(link) => {
            let child_layer = node.child_layer()?;
            split(take_node(link, child_layer, store)?, key, store)?
        }
        None => (None, None),
    };
    *node.slot_mut(i) = sub_lo.map(loaded);
    node.cached = None;
    let right = Node {
        layer,
        left: sub_hi.map(loaded),
        entries: right_entries,
        cached: None,
    };
    Ok((nonempty(node), nonempty(right)))
}

fn delete_from(node: &mut Node, key: &str, store: &dyn BlockSource) -> Result<Option<Cid>> {
    let i = node.gap_index(key);
    if i < node.entries.len() && node.entries[i].key == key {
        node.cached = None;
        let removed = node.entries.remove(i);
        let before = node.slot_mut(i).take();
        let merged = merge(before, removed.right, node.layer, store)?;
        *node.slot_mut(i) = merged;
        return Ok(Some(removed.value));
    }
    if node.slot(i).is_none() {
        return Ok(None);
    }
    let child_layer = node.child_layer()?;
    let link = node.slot_mut(i).as_mut().expect("checked above");
    let child = load(link, child_layer, store)?;
    let removed = delete_from(child, key, store)?;
    if removed.is_some() {
        let now_empty = child.is_empty();
        node.cached = None;
        if now_empty {
            *node.slot_mut(i) = None;
        }
    }
    Ok(removed)
}

/// Joins two adjacent subtrees (every key of `a` below every key of `b`) that
/// hang below a node of `parent_layer`.
fn merge(
    a: Option<Link>,
    b: Option<Link>,
    parent_layer: u32,
    store: &dyn BlockSource,
) -> Result<Option<Link>> {
    let (a, b) = match (a, b) {
        (None, x) | (x, None) => return Ok(x),
        (Some(a), Some(b)) => (a, b),
    };
    let layer = parent_layer
        .checked_sub(1)
        .ok_or_else(|| MstError::Malformed {
            cid: cid_for_cbor(b""),
            reason: "layer-0 node has a subtree".into(),
        })?;
    let mut a = take_node(a, layer, store)?;
    let mut b = take_node(b, layer, store)?;
    a.cached = None;
    let last = a.entries.len();
    let a_tail = a.slot_mut(last).take();
    let mid = merge(a_tail, b.left.take(), layer, store)?;
    *a.slot_mut(last) = mid;
    a.entries.append(&mut b.entries);
    Ok(Some(loaded(a)))
}

fn link_cid(link: &mut Link, out: &mut BlockMap) -> Cid {
    match link {
        Link::Stored(c) => *c,
        // Only clone a shared node if it actually needs encoding.
        Link::Loaded(n) => match &n.cached {
            Some((c, _)) => *c,
            None => commit_node(Arc::make_mut(n), out),
        },
    }
}

fn commit_node(node: &mut Node, out: &mut BlockMap) -> Cid {
    if let Some((cid, _)) = &node.cached {
        return *cid;
    }
    let left = node.left.as_mut().map(|l| link_cid(l, out));
    let rights: Vec<Option<Cid>> = node
        .entries
        .iter_mut()
        .map(|e| e.right.as_mut().map(|l| link_cid(l, out)))
        .collect();
    let bytes = encode_node(left.as_ref(), &node.entries, &rights);
    let cid = cid_for_cbor(&bytes);
    let bytes: Arc<[u8]> = bytes.into();
    out.insert(cid, bytes.clone());
    node.cached = Some((cid, bytes));
    cid
}

/// Encodes `{e: [{k, p, t, v}...], l}` directly (hot path; same bytes as the
/// generic encoder, checked by the tests).
fn encode_node(left: Option<&Cid>, entries: &[Entry], rights: &[Option<Cid>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 80);
    cbor::write_map_header(&mut out, 2);
    cbor::write_str(&mut out, "e");
    cbor::write_array_header(&mut out, entries.len());
    let mut prev: &str = "";
    for (e, right) in entries.iter().zip(rights) {
        let p = common_prefix_len(prev, &e.key);
        cbor::write_map_header(&mut out, 4);
        cbor::write_str(&mut out, "k");
        cbor::write_bytes(&mut out, &e.key.as_bytes()[p..]);
        cbor::write_str(&mut out, "p");
        cbor::write_uint(&mut out, p as u64);
        cbor::write_str(&mut out, "t");
        match right {
            Some(c) => cbor::write_cid(&mut out, c),
            None => out.push(0xf6),
        }
        cbor::write_str(&mut out, "v");
        cbor::write_cid(&mut out, &e.value);
        prev = &e.key;
    }
    cbor::write_str(&mut out, "l");
    match left {
        Some(c) => cbor::write_cid(&mut out, c),
        None => out.push(0xf6),
    }
    out
}

/// A Merkle Search Tree over a block source.
#[derive(Debug, Clone)]
pub struct Mst {
    root: Node,
}

impl Default for Mst {
    fn default() -> Self {
        Self::new()
    }
}

impl Mst {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            root: Node::empty(0),
        }
    }

    /// Opens the tree whose root node is `root` (loaded now, children lazily).
    pub fn load(root: &Cid, store: &dyn BlockSource) -> Result<Self> {
        Ok(Self {
            root: read_node(root, None, store)?,
        })
    }

    /// Inserts or updates `key`, returning the previous value.
    pub fn insert(
        &mut self,
        key: &str,
        value: Cid,
        store: &dyn BlockSource,
    ) -> Result<Option<Cid>> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(MstError::InvalidKey(key.to_owned()));
        }
        let h = key_height(key);
        if self.root.is_empty() {
            self.root = Node::empty(h);
        }
        while self.root.layer < h {
            let old = std::mem::replace(&mut self.root, Node::empty(0));
            self.root = Node {
                layer: old.layer + 1,
                left: Some(loaded(old)),
                entries: vec![],
                cached: None,
            };
        }
        let r = insert_into(&mut self.root, key.to_owned(), value, h, store);
        // An error may leave a raised, entry-less root behind: trim it either way.
        self.trim(store)?;
        r
    }

    /// Deletes `key`, returning its value if it was present.
    pub fn delete(&mut self, key: &str, store: &dyn BlockSource) -> Result<Option<Cid>> {
        let removed = delete_from(&mut self.root, key, store)?;
        if removed.is_some() {
            self.trim(store)?;
        }
        Ok(removed)
    }

    fn trim(&mut self, store: &dyn BlockSource) -> Result<()> {
        while self.root.entries.is_empty() {
            match self.root.left.take() {
                Some(link) => {
                    let layer = self.root.child_layer()?;
                    self.root = take_node(link, layer, store)?;
                }
                None => {
                    self.root = Node::empty(0);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Encodes every changed node, returning the root CID and the new blocks.
    pub fn commit(&mut self) -> (Cid, BlockMap) {
        let mut out = BlockMap::new();
        let cid = commit_node(&mut self.root, &mut out);
        (cid, out)
    }

    /// The root CID, if the tree has no uncommitted changes.
    pub fn root_cid(&self) -> Option<Cid> {
        self.root.cached.as_ref().map(|c| c.0)
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str, store: &dyn BlockSource) -> Result<Option<Cid>> {
        let mut cur = NodeRef::Borrowed(&self.root);
        loop {
            let n = cur.node();
            let i = n.gap_index(key);
            if i < n.entries.len() && n.entries[i].key == key {
                return Ok(Some(n.entries[i].value));
            }
            match child_ref(&cur, i, store)? {
                Some(next) => cur = next,
                None => return Ok(None),
            }
        }
    }

    /// Calls `f` for each `(key, value)` with `key >= from`, in order, until it returns `false`.
    pub fn walk_from(
        &self,
        from: &str,
        store: &dyn BlockSource,
        f: &mut dyn FnMut(&str, &Cid) -> bool,
    ) -> Result<()> {
        walk(&NodeRef::Borrowed(&self.root), from, store, f).map(|_| ())
    }

    /// All `(key, value)` pairs in order.
    pub fn entries(&self, store: &dyn BlockSource) -> Result<Vec<(String, Cid)>> {
        let mut out = vec![];
        self.walk_from("", store, &mut |k, v| {
            out.push((k.to_owned(), *v));
            true
        })?;
        Ok(out)
    }

    /// Every node block of the tree (for full-repository export).
    pub fn node_blocks(&self, store: &dyn BlockSource, out: &mut BlockMap) -> Result<()> {
        collect_all(&NodeRef::Borrowed(&self.root), store, out)
    }

    /// The node blocks on the search path of `key`, root first. Proves the
    /// key's value, or its absence.
    pub fn proof_for_key(
        &self,
        key: &str,
        store: &dyn BlockSource,
        out: &mut BlockMap,
    ) -> Result<()> {
        let mut cur = NodeRef::Borrowed(&self.root);
        loop {
            put_node(cur.node(), out)?;
            let n = cur.node();
            let i = n.gap_index(key);
            if i < n.entries.len() && n.entries[i].key == key {
                return Ok(());
            }
            match child_ref(&cur, i, store)? {
                Some(next) => cur = next,
                None => return Ok(()),
            }
        }
    }

    /// The covering proof of `key`: the search paths of the key and of its
    /// nearest neighbours on each side. Enough for a verifier to check the
    /// key's presence or absence and to invert an operation on it.
    pub fn covering_proof(
        &self,
        key: &str,
        store: &dyn BlockSource,
        out: &mut BlockMap,
    ) -> Result<()> {
        self.proof_for_key(key, store, out)?;
        let (before, after) = self.neighbours(key, store)?;
        for k in before.iter().chain(after.iter()) {
            self.proof_for_key(k, store, out)?;
        }
        Ok(())
    }

    /// The greatest key below `key` and the least key above it.
    pub fn neighbours(
        &self,
        key: &str,
        store: &dyn BlockSource,
    ) -> Result<(Option<String>, Option<String>)> {
        let (mut before, mut after) = (None, None);
        let mut cur = NodeRef::Borrowed(&self.root);
        loop {
            let n = cur.node();
            let i = n.gap_index(key);
            if i > 0 {
                before = Some(n.entries[i - 1].key.clone());
            }
            if i < n.entries.len() && n.entries[i].key == key {
                // Neighbours are the extremes of the subtrees on each side.
                if let Some(c) = child_ref(&cur, i, store)? {
                    before = Some(extreme(c, true, store)?);
                }
                if let Some(c) = child_ref(&cur, i + 1, store)? {
                    after = Some(extreme(c, false, store)?);
                } else if i + 1 < n.entries.len() {
                    after = Some(n.entries[i + 1].key.clone());
                }
                return Ok((before, after));
            }
            if i < n.entries.len() {
                after = Some(n.entries[i].key.clone());
            }
            match child_ref(&cur, i, store)? {
                Some(next) => cur = next,
                None => return Ok((before, after)),
            }
        }
    }
}

/// The last (`last = true`) or first key of a non-empty subtree.
fn extreme(mut cur: NodeRef<'_>, last: bool, store: &dyn BlockSource) -> Result<String> {
    loop {
        let n = cur.node();
        let slot = if last { n.entries.len() } else { 0 };
        match child_ref(&cur, slot, store)? {
            Some(next) => cur = next,
            None => {
                let e = if last {
                    n.entries.last()
                } else {
                    n.entries.first()
                };
                return e
                    .map(|e| e.key.clone())
                    .ok_or_else(|| n.malformed("empty subtree"));
            }
        }
    }
}

fn put_node(n: &Node, out: &mut BlockMap) -> Result<()> {
    let (cid, bytes) = n.cached.as_ref().ok_or(MstError::Uncommitted)?;
    out.insert(*cid, bytes.clone());
    Ok(())
}

fn walk(
    cur: &NodeRef<'_>,
    from: &str,
    store: &dyn BlockSource,
    f: &mut dyn FnMut(&str, &Cid) -> bool,
) -> Result<bool> {
    let n = cur.node();
    let start = n.gap_index(from);
    for i in start..=n.entries.len() {
        if let Some(child) = child_ref(cur, i, store)?
            && !walk(&child, from, store, f)?
        {
            return Ok(false);
        }
        if let Some(e) = n.entries.get(i)
            && !f(&e.key, &e.value)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect_all(cur: &NodeRef<'_>, store: &dyn BlockSource, out: &mut BlockMap) -> Result<()> {
    put_node(cur.node(), out)?;
    for i in 0..=cur.node().entries.len() {
        if let Some(child) = child_ref(cur, i, store)? {
            collect_all(&child, store, out)?;
        }
    }
    Ok(())
}

/// Looks `key` up in the tree rooted at `root` for a *verifier*: every node
/// must be present (a missing block is an error, never "absent"), hash to its
/// CID, be well-formed, sit at the layer its parent implies, and keep its keys
/// inside the gap it hangs from. `Ok(None)` is therefore a sound proof of
/// absence.
pub fn lookup_verified(root: &Cid, key: &str, store: &dyn BlockSource) -> Result<Option<Cid>> {
    let mut node = read_node(root, None, store)?;
    let mut cid = *root;
    let (mut lo, mut hi): (Option<String>, Option<String>) = (None, None);
    loop {
        let out_of_range = node.entries.iter().any(|e| {
            lo.as_deref().is_some_and(|l| e.key.as_str() <= l)
                || hi.as_deref().is_some_and(|h| e.key.as_str() >= h)
        });
        if out_of_range {
            return Err(MstError::Malformed {
                cid,
                reason: "key outside the range of its parent gap".into(),
            });
        }
        let i = node.gap_index(key);
        if i < node.entries.len() && node.entries[i].key == key {
            return Ok(Some(node.entries[i].value));
        }
        if i > 0 {
            lo = Some(node.entries[i - 1].key.clone());
        }
        if i < node.entries.len() {
            hi = Some(node.entries[i].key.clone());
        }
        let next = match node.slot(i) {
            None => return Ok(None),
            Some(Link::Stored(c)) => *c,
            Some(Link::Loaded(_)) => unreachable!("nodes read from a store hold stored links"),
        };
        let layer = node.child_layer()?;
        node = read_node(&next, Some(layer), store)?;
        cid = next;
    }
}
