//! How whatever writes many rows at once (a restore, the write-back of key records at open)
//! writes them: in small batches, each flushed before the next.

use crate::domain::{Error, Result};

/// The most one sled batch holds (keys and values). Small on purpose: sled 0.34 pins one epoch
/// for a whole `apply_batch`, so every node version a batch replaces (a leaf per insert, the
/// parent index at every split) stays allocated until the batch ends. 1 MiB batches peaked at
/// 398 MiB on a 50,000-key restore; 16 KiB batches at 67 MiB, and faster (docs/backup.md).
const BATCH_BYTES: usize = 16 << 10;

/// Writes rows into one tree in batches of at most about [`BATCH_BYTES`], each flushed before
/// the next is applied (sled holds what it has not flushed in memory).
pub(in crate::store) struct SmallBatches<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    bytes: usize,
    count: usize,
}

impl<'a> SmallBatches<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        SmallBatches {
            tree,
            batch: sled::Batch::default(),
            bytes: 0,
            count: 0,
        }
    }

    pub fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.bytes += key.len() + value.len() + 1;
        self.batch.insert(key, value);
        self.count += 1;
        if self.bytes >= BATCH_BYTES {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<()> {
        self.bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        self.tree.apply_batch(batch).map_err(Error::internal)?;
        self.tree.flush().map_err(Error::internal)?;
        Ok(())
    }

    /// Writes what is left; says how many rows were written in all.
    pub fn finish(mut self) -> Result<usize> {
        if self.bytes > 0 {
            self.apply()?;
        }
        Ok(self.count)
    }
}
