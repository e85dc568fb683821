//! Opening a store: a backend, then the bootstrap rule on it (which does nothing on a store
//! already initialised). The next backend gets its `open_*` here.

use std::path::Path;

use super::backend::Backend;
use super::handle::{futures_now, Opened, Store};
use super::rules::bootstrap::{initialise, read_store_id};
use super::sled::backend::SledBackend;
use super::sled::durability::Durability;
use super::sled::open::{open_db, StoreOptions};
use super::tables::Trees;
use crate::domain::{Error, Result};

impl Store {
    /// Opens (or creates) the database in `dir`. A new database gets a store id and the
    /// `operator` account, whose token is written to `dir/operator.token` (mode 0600).
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Opened> {
        let (lock, db) = open_db(dir, options)?;
        let trees = Trees::open(&db)?;
        let durability = Durability::open(db.clone(), trees.meta.clone(), &dir.join("db"))?;
        let backend = Backend::Sled(SledBackend::new(db.clone(), trees, durability, lock, dir)?);
        let created = match futures_now(initialise(dir, &backend))? {
            true => {
                db.flush().map_err(Error::internal)?;
                true
            }
            false => false,
        };
        let store_id = futures_now(read_store_id(&backend))?;
        Ok(Opened {
            store: Store::from_backend(backend, store_id),
            created,
        })
    }
}

#[cfg(feature = "etcd")]
impl Store {
    /// Connects to a store on etcd (initialising the prefix if it is empty: then, and only
    /// then, the operator token is written to `dir/operator.token`).
    pub async fn open_etcd(url: &super::EtcdUrl, dir: &Path) -> Result<Opened> {
        super::sled::files::create_private_dir(dir)?;
        let backend = Backend::Etcd(super::etcd::EtcdBackend::connect(url).await?);
        let created = initialise(dir, &backend).await?;
        let store_id = read_store_id(&backend).await?;
        Ok(Opened {
            store: Store::from_backend(backend, store_id),
            created,
        })
    }
}
