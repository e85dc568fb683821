//! How big a sled batch may be, for whatever writes many rows at once (a restore, the
//! write-back of key records at open).

/// The most one sled batch holds (keys and values). Small on purpose: sled 0.34 pins one epoch
/// for a whole `apply_batch`, so every node version a batch replaces (a leaf per insert, the
/// parent index at every split) stays allocated until the batch ends. 1 MiB batches peaked at
/// 398 MiB on a 50,000-key restore; 16 KiB batches at 67 MiB, and faster (docs/backup.md).
pub(in crate::store) const BATCH_BYTES: usize = 16 << 10;
