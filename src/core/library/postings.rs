//! A keyword's files: sorted distinct `u32` indexes, stored as varint deltas in
//! blocks, so a common word costs about a byte per file and a look-up jumps
//! to the right block instead of decoding the whole list.
//!
//! Each block holds up to [`BLOCK`] values (more after out-of-order inserts,
//! until it is split) coded as deltas from the previous value, the first from
//! the block's `base`, a number no larger than the block's first value that
//! never changes. So a block can be rewritten (a value inserted or removed)
//! without touching any other block. A list of at most one block keeps no
//! block table.

/// Values per block when appending.
const BLOCK: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    /// What the block's first delta is taken from.
    base: u32,
    /// Where the block's bytes start.
    off: u32,
    /// Values in the block.
    count: u32,
}

/// Sorted distinct indexes.
#[derive(Debug, Default)]
pub(super) struct Postings {
    bytes: Vec<u8>,
    len: u32,
    last: u32,
    /// Empty while the list is a single block (base 0, from byte 0).
    blocks: Blocks,
}

/// A block table, allocated only for a list of several blocks (most words
/// have a few files and need none). Boxed so that a word without one pays 8
/// bytes for it, not a `Vec`'s 24.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
struct Blocks(Option<Box<Vec<Block>>>);

static NO_BLOCKS: Vec<Block> = Vec::new();

impl std::ops::Deref for Blocks {
    type Target = Vec<Block>;

    fn deref(&self) -> &Vec<Block> {
        self.0.as_deref().unwrap_or(&NO_BLOCKS)
    }
}

/// No `DerefMut`: a table is allocated only where a block is added
/// ([`Blocks::make`]); every other change goes through the table that is
/// there ([`Blocks::table`]), so a one-block list never gets an empty one.
impl Blocks {
    /// The table, allocated now if there is none: for adding a block.
    fn make(&mut self) -> &mut Vec<Block> {
        self.0.get_or_insert_with(Default::default)
    }

    /// The table, if the list has one with blocks in it.
    fn table(&mut self) -> Option<&mut Vec<Block>> {
        self.0.as_deref_mut().filter(|t| !t.is_empty())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `bytes[*pos..]`, moving `pos` past it. The bytes are our own
/// encoding, so they are always complete.
fn get_varint(bytes: &[u8], pos: &mut usize) -> u32 {
    let mut v = 0u32;
    let mut shift = 0;
    loop {
        let b = bytes[*pos];
        *pos += 1;
        v |= u32::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

impl Postings {
    /// Number of indexes.
    pub(super) fn len(&self) -> usize {
        self.len as usize
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn nblocks(&self) -> usize {
        if self.blocks.is_empty() {
            usize::from(self.len > 0)
        } else {
            self.blocks.len()
        }
    }

    fn block(&self, k: usize) -> Block {
        if self.blocks.is_empty() {
            Block {
                base: 0,
                off: 0,
                count: self.len,
            }
        } else {
            self.blocks[k]
        }
    }

    fn block_end(&self, k: usize) -> usize {
        if k + 1 < self.blocks.len() {
            self.blocks[k + 1].off as usize
        } else {
            self.bytes.len()
        }
    }

    fn first_of(&self, k: usize) -> u32 {
        let b = self.block(k);
        let mut pos = b.off as usize;
        b.base + get_varint(&self.bytes, &mut pos)
    }

    fn decode_block(&self, k: usize) -> Vec<u32> {
        let b = self.block(k);
        let mut pos = b.off as usize;
        let mut v = b.base;
        (0..b.count)
            .map(|_| {
                v += get_varint(&self.bytes, &mut pos);
                v
            })
            .collect()
    }

    /// The block `v` belongs in: the last whose first value is at most `v`
    /// (the first block for a value below all).
    fn block_for(&self, v: u32) -> usize {
        let n = self.nblocks();
        let (mut lo, mut hi) = (0, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.first_of(mid) <= v {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Adds `v` (nothing if present). Appending a value above every other is
    /// the common case and costs a few bytes.
    pub(super) fn insert(&mut self, v: u32) {
        if self.len == 0 || v > self.last {
            self.push(v);
            return;
        }
        let k = self.block_for(v);
        let mut values = self.decode_block(k);
        let Err(at) = values.binary_search(&v) else {
            return;
        };
        values.insert(at, v);
        self.len += 1;
        self.rewrite(k, &values);
    }

    fn push(&mut self, v: u32) {
        let full = match self.blocks.last() {
            Some(b) => b.count >= BLOCK,
            None => self.len >= BLOCK,
        };
        if full {
            let table = self.blocks.make();
            if table.is_empty() {
                table.push(Block {
                    base: 0,
                    off: 0,
                    count: self.len,
                });
            }
            table.push(Block {
                base: self.last,
                off: self.bytes.len() as u32,
                count: 0,
            });
        }
        let prev = if self.len == 0 { 0 } else { self.last };
        if self.bytes.capacity() - self.bytes.len() < 5 {
            // Growing by a quarter, not doubling: a list grows one value at a
            // time, and doubling would leave a common word's list up to half
            // empty.
            self.bytes.reserve_exact(5 + self.bytes.len() / 4);
        }
        put_varint(&mut self.bytes, v - prev);
        if let Some(b) = self.blocks.table().and_then(|t| t.last_mut()) {
            b.count += 1;
        }
        self.len += 1;
        self.last = v;
    }

    /// Gives back every spare byte (after a bulk load).
    pub(super) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        match self.blocks.table() {
            Some(t) => t.shrink_to_fit(),
            None => self.blocks = Blocks::default(),
        }
    }

    /// Gives back spare capacity left by removals.
    fn fit(&mut self) {
        let (len, cap) = (self.bytes.len(), self.bytes.capacity());
        if cap > 16 && cap - len > cap / 2 {
            self.bytes.shrink_to(len + len / 4);
        }
    }

    /// Removes `v`; whether it was there.
    pub(super) fn remove(&mut self, v: u32) -> bool {
        if self.len == 0 {
            return false;
        }
        let k = self.block_for(v);
        let mut values = self.decode_block(k);
        let Ok(at) = values.binary_search(&v) else {
            return false;
        };
        values.remove(at);
        self.len -= 1;
        self.rewrite(k, &values);
        if self.len == 0 {
            *self = Postings::default();
        } else if v == self.last {
            let n = self.nblocks();
            self.last = *self
                .decode_block(n - 1)
                .last()
                .expect("a block is never empty");
        }
        true
    }

    /// Replaces block `k`'s values (the count already adjusted in `len` for a
    /// single-block list), splitting a block grown too large and dropping an
    /// empty one.
    fn rewrite(&mut self, k: usize, values: &[u32]) {
        let b = self.block(k);
        let start = b.off as usize;
        let end = self.block_end(k);
        let mut coded = Vec::with_capacity(values.len() * 2);
        let mut prev = b.base;
        let split = values.len() > 2 * BLOCK as usize;
        let half = values.len() / 2;
        for (i, &v) in values.iter().enumerate() {
            if split && i == half {
                prev = values[i - 1];
            }
            put_varint(&mut coded, v - prev);
            prev = v;
        }
        let second_off = if split {
            let mut c = Vec::new();
            let mut p = b.base;
            for &v in &values[..half] {
                put_varint(&mut c, v - p);
                p = v;
            }
            Some(start + c.len())
        } else {
            None
        };
        let grew = coded.len() as isize - (end - start) as isize;
        self.bytes.splice(start..end, coded);
        self.fit();
        if self.blocks.is_empty() && (split || values.is_empty()) {
            if values.is_empty() {
                return;
            }
            self.blocks.make().push(Block {
                base: 0,
                off: 0,
                count: values.len() as u32,
            });
        }
        let Some(table) = self.blocks.table() else {
            return;
        };
        for later in &mut table[k + 1..] {
            later.off = (later.off as isize + grew) as u32;
        }
        if values.is_empty() {
            table.remove(k);
        } else if let Some(off) = second_off {
            table[k].count = half as u32;
            table.insert(
                k + 1,
                Block {
                    base: values[half - 1],
                    off: off as u32,
                    count: (values.len() - half) as u32,
                },
            );
        } else {
            table[k].count = values.len() as u32;
        }
        if table.len() == 1 && table[0].base == 0 && table[0].off == 0 {
            self.blocks = Blocks::default();
        } else if table.capacity() > 2 * table.len() + 4 {
            table.shrink_to_fit();
        }
    }

    /// Every index, in order.
    pub(super) fn iter(&self) -> Cursor<'_> {
        Cursor::new(self)
    }
}

/// A walk through a list in order, able to skip ahead.
#[derive(Clone, Debug)]
pub(super) struct Cursor<'a> {
    list: &'a Postings,
    block: usize,
    pos: usize,
    left: u32,
    prev: u32,
}

impl<'a> Cursor<'a> {
    fn new(list: &'a Postings) -> Cursor<'a> {
        let mut c = Cursor {
            list,
            block: 0,
            pos: 0,
            left: 0,
            prev: 0,
        };
        c.enter(0);
        c
    }

    fn enter(&mut self, k: usize) {
        self.block = k;
        if k < self.list.nblocks() {
            let b = self.list.block(k);
            self.pos = b.off as usize;
            self.left = b.count;
            self.prev = b.base;
        } else {
            self.left = 0;
        }
    }

    /// Whether `v` is in the list. Calls must ask for values in increasing
    /// order (repeats allowed): the cursor moves past everything below `v`.
    pub(super) fn seek(&mut self, v: u32) -> bool {
        // Jump over whole blocks that end before `v`.
        let n = self.list.nblocks();
        if self.block + 1 < n && self.list.first_of(self.block + 1) <= v {
            let (mut lo, mut hi) = (self.block + 1, n);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if self.list.first_of(mid) <= v {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            self.enter(lo);
        }
        loop {
            if self.left == 0 {
                return false;
            }
            let mut pos = self.pos;
            let next = self.prev + get_varint(&self.list.bytes, &mut pos);
            if next >= v {
                // Left unread: the next call may ask for it again.
                return next == v;
            }
            self.pos = pos;
            self.prev = next;
            self.left -= 1;
            if self.left == 0 {
                self.enter(self.block + 1);
            }
        }
    }
}

impl Iterator for Cursor<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        self.prev += get_varint(&self.list.bytes, &mut self.pos);
        self.left -= 1;
        let v = self.prev;
        if self.left == 0 {
            self.enter(self.block + 1);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A list of one block keeps no block table: most words' lists are
    /// that short, and a table each would cost more than their values.
    #[test]
    fn a_short_list_has_no_block_table() {
        let mut p = Postings::default();
        for v in (1..=BLOCK).map(|i| i * 1000) {
            p.push(v);
            assert!(p.blocks.0.is_none(), "after {v}");
        }
        p.insert(500);
        p.remove(500);
        p.shrink_to_fit();
        assert!(p.blocks.0.is_none());
        p.push(BLOCK * 1000 + 1);
        assert_eq!(p.blocks.len(), 2, "a second block brings the table");
        assert_eq!(p.iter().count(), BLOCK as usize + 1);
    }

    fn check(p: &Postings, want: &BTreeSet<u32>) {
        assert_eq!(p.len(), want.len());
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            want.iter().copied().collect::<Vec<_>>()
        );
        if let Some(l) = want.last() {
            assert_eq!(p.last, *l);
        }
        // Every block non-empty and counted.
        let total: u32 = (0..p.nblocks()).map(|k| p.block(k).count).sum();
        assert_eq!(total, p.len);
        assert!((0..p.nblocks()).all(|k| p.block(k).count > 0));
    }

    #[test]
    fn appends_inserts_and_removes() {
        let mut p = Postings::default();
        let mut want = BTreeSet::new();
        for v in (1..5000).step_by(3) {
            p.insert(v);
            want.insert(v);
        }
        check(&p, &want);
        assert!(p.bytes.len() < want.len() + 10, "a byte per small delta");
        for v in [2, 0, 4999, 100_000, 2500] {
            p.insert(v);
            want.insert(v);
        }
        check(&p, &want);
        for v in (1..5000).step_by(7) {
            assert_eq!(p.remove(v), want.remove(&v));
        }
        check(&p, &want);
        let mut c = p.iter();
        for v in 0..110_000 {
            assert_eq!(c.seek(v), want.contains(&v), "{v}");
        }
        for v in want.clone() {
            assert!(p.remove(v));
        }
        assert!(p.is_empty());
        assert!(p.bytes.capacity() == 0 && p.blocks.is_empty());
    }

    proptest! {
        #[test]
        fn behaves_as_a_sorted_set(ops in proptest::collection::vec((any::<bool>(), 0u32..3000), 0..600),
                                   probes in proptest::collection::vec(0u32..3100, 0..50)) {
            let mut p = Postings::default();
            let mut want = BTreeSet::new();
            for (add, v) in ops {
                if add {
                    p.insert(v);
                    want.insert(v);
                } else {
                    prop_assert_eq!(p.remove(v), want.remove(&v));
                }
            }
            check(&p, &want);
            let mut probes = probes;
            probes.sort();
            let mut c = p.iter();
            for v in probes {
                prop_assert_eq!(c.seek(v), want.contains(&v));
            }
        }
    }
}
