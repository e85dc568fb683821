//! The seam's one-point read: every entry of every table as it stood at one point of the store,
//! handed to a callback as it is read. A backup (offline or online) is this and nothing else.
//!
//! On sled, which has no snapshots, writers wait while the trees are copied (the copy goes to
//! a local file, never to a network peer, so the pause is the disk's speed, not a client's); on
//! etcd every page is read at the revision of the first one, and writers never wait.

use std::time::{Duration, Instant};

use super::backend::Backend;
use super::sled_backend::SledBackend;
use super::tables::Table;
use crate::domain::{Error, Result};

/// What the one-point read hands each entry to.
pub(super) type Each<'a> = dyn FnMut(Table, &[u8], &[u8]) -> Result<()> + Send + 'a;

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
    /// Copies every tree while no writer runs. Blocking: call it off the runtime's workers.
    fn snapshot(&self, each: &mut Each<'_>) -> Result<Paused> {
        // Nothing panics while holding it: a poisoned lock guards nothing broken.
        let _paused = self.writers.write().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        for &table in Table::ALL {
            for item in self.trees.get(table).iter() {
                let (key, value) = item.map_err(Error::internal)?;
                each(table, &key, &value)?;
            }
        }
        Ok(Paused(started.elapsed()))
    }
}
