//! The seam's one-point read: every entry of every table as it stood at one point of the store,
//! handed to a callback as it is read. A backup (offline or online) is this and nothing else.
//!
//! On sled, which has no snapshots, writers wait while the trees are copied (the copy goes to
//! a local file, never to a network peer, so the pause is the disk's speed, not a client's); on
//! etcd every page is read at the revision of the first one, and writers never wait.

use std::{
    io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    time::{Duration, Instant},
};

use super::backend::Backend;
use super::sled::backend::SledBackend;
use super::tables::Table;
use crate::domain::{Error, Result};

pub(super) use super::kv::Each;

/// How long writers waited for the read (zero on etcd).
#[derive(Clone, Copy, Debug, Default)]
pub struct Paused(pub Duration);

impl Backend {
    /// Calls `each` with every entry of every table, as they stood at one point.
    pub async fn snapshot(&self, each: &mut Each<'_>) -> Result<Paused> {
        match self {
            Backend::Sled(sled) => sled.snapshot(each),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.snapshot(each).await.map(|_| Paused::default()),
        }
    }
}

impl SledBackend {
    /// Copies every tree, raw, to a spool file while no writer runs, then hands the copy to
    /// `each` once writers run again (encoding and hashing a backup entry costs more than
    /// copying it). Blocking: call it off the runtime's workers.
    fn snapshot(&self, each: &mut Each<'_>) -> Result<Paused> {
        let spool = super::sled::files::unnamed_file(&self.dir)?;
        let mut raw = BufWriter::with_capacity(1 << 20, spool);
        let paused = {
            // Nothing panics while holding it: a poisoned lock guards nothing broken.
            let _paused = self.writers.write().unwrap_or_else(|e| e.into_inner());
            let started = Instant::now();
            for (index, &table) in Table::ALL.iter().enumerate() {
                for item in self.trees.get(table).iter() {
                    let (key, value) = item.map_err(Error::internal)?;
                    write_raw(&mut raw, index, &key, &value).map_err(Error::internal)?;
                }
            }
            started.elapsed()
        };
        let mut spool = raw
            .into_inner()
            .map_err(|e| Error::internal(e.into_error()))?;
        spool.seek(SeekFrom::Start(0)).map_err(Error::internal)?;
        let mut raw = BufReader::with_capacity(1 << 20, spool);
        let (mut key, mut value) = (Vec::new(), Vec::new());
        while let Some(index) = read_raw(&mut raw, &mut key, &mut value).map_err(Error::internal)? {
            each(Table::ALL[index], &key, &value)?;
        }
        Ok(Paused(paused))
    }
}

/// One copied entry: the table's index, then the key and the value, each after its length.
fn write_raw(out: &mut impl Write, table: usize, key: &[u8], value: &[u8]) -> io::Result<()> {
    out.write_all(&[table as u8])?;
    for bytes in [key, value] {
        out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        out.write_all(bytes)?;
    }
    Ok(())
}

/// The next copied entry's table index (None at the end), its key and value read into `key`
/// and `value`.
fn read_raw(
    input: &mut impl Read,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let mut table = [0];
    if input.read(&mut table)? == 0 {
        return Ok(None);
    }
    for bytes in [key, value] {
        let mut len = [0; 4];
        input.read_exact(&mut len)?;
        bytes.resize(u32::from_le_bytes(len) as usize, 0);
        input.read_exact(bytes)?;
    }
    Ok(Some(usize::from(table[0])))
}
