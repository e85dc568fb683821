//! Jobs that one replica at a time should run (pruning): a guarded key in `meta` names the
//! replica holding the job and until when. A replica takes it when it is free, expired or
//! already its own, in one transaction, so two replicas never both hold it. On sled there is
//! one process, which always holds it.

use std::time::{Duration, SystemTime};

use prost::Message;

use crate::domain::Result;
use crate::store::handle::Store;
use crate::store::kv::lift;
use crate::store::records::{decode, micros};
use crate::store::tables::Table;

#[derive(Clone, PartialEq, Message)]
struct TurnRecord {
    #[prost(string, tag = "1")]
    holder: String,
    #[prost(int64, tag = "2")]
    until_us: i64,
}

impl Store {
    /// Whether this replica holds job `job` for the next `hold` (taking or extending it).
    pub async fn take_turn(&self, job: &str, hold: Duration) -> Result<bool> {
        if !self.is_replica() {
            return Ok(true);
        }
        let key = [b"turn/".as_slice(), job.as_bytes()].concat();
        let me = self.inner.replica_id.as_str();
        let now = SystemTime::now();
        let taken = TurnRecord {
            holder: me.to_owned(),
            until_us: micros(now + hold),
        }
        .encode_to_vec();
        self.commit(
            || vec![(Table::Meta, key.clone())],
            |tx| {
                if let Some(bytes) = tx.get(Table::Meta, &key)? {
                    let current = lift(decode::<TurnRecord>(&bytes))?;
                    if current.holder != me && current.until_us > micros(now) {
                        return Ok(false);
                    }
                }
                tx.insert(Table::Meta, &key, &taken)?;
                Ok(true)
            },
        )
        .await
    }
}
