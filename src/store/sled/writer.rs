//! One writer thread that runs the rules of many callers in one sled transaction.
//!
//! Why: every sled 0.34 transaction, however small, seals sled's log buffer twice (before and
//! after reserving its batch manifest, `PageCache::pin_log`), and each sealed buffer is written
//! and `sync_file_range`d on its own. Measured under 64 RegenerateKey callers: ~2 log writes
//! with `sync_file_range` per transaction against ~60 of our fdatasyncs a second, so the disk
//! did per transaction what the group commit (`durability.rs`) saves per flush. Run as one
//! transaction, the changes queued while the previous batch committed cost those two writes
//! once, and the lock sled takes for a transaction once; no runtime worker waits on that lock.
//!
//! Each caller's rule runs in a savepoint of the batch's transaction: what it writes joins the
//! batch only when it returns Ok, so a rule that refuses (an abort) refuses alone, and every
//! rule reads what the rules before it in the batch wrote, as if they had run one after the
//! other. A storage failure fails the whole batch, so every caller in it. Each caller still
//! answers only after the flush that covers its change (`Store::commit`), and the view is
//! refreshed for the whole batch before any of its callers hears of its outcome.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{mpsc, Arc, RwLock},
    thread::JoinHandle,
};

use tokio::sync::oneshot;

use super::transaction::{transact_trees, AfterCommit, Failure, Written};
use crate::domain::Error;
use crate::store::kv::{Tx, TxError, TxResult};
use crate::store::tables::Table;

/// Rules taken into one transaction at most: bounds how long one batch holds sled's lock.
const MAX_BATCH: usize = 256;

/// The writer thread and the queue into it. Dropping it ends the thread and waits for it, so
/// that no tree handle outlives the store (a reopen in the same process would find sled's
/// files still locked).
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Pending>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread: it runs batches over `trees` (every table, in `Table::ALL` order)
    /// while holding `fence` shared (a backup holds it alone), then `after` for each batch.
    pub fn start(
        trees: Vec<sled::Tree>,
        fence: Arc<RwLock<()>>,
        after: Arc<AfterCommit>,
    ) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Pending>>();
        let thread = std::thread::Builder::new()
            .name("zsc-writer".into())
            .spawn(move || {
                while let Ok(first) = jobs.recv() {
                    let mut batch = vec![first];
                    batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
                    // Nothing panics while holding it: poisoning would mean no harm.
                    let _writing = fence.read().unwrap_or_else(|e| e.into_inner());
                    run_batch(&trees, &after, batch);
                }
            })?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `rules` in the next batch and returns its outcome once the batch has committed
    /// and the view reflects it (not yet durable: the caller syncs).
    pub async fn run<T: Send + 'static>(
        &self,
        rules: impl Fn(&mut dyn Tx) -> TxResult<T> + Send + Sync + 'static,
    ) -> Result<T, Failure> {
        let (reply, outcome) = oneshot::channel();
        let rule = Rule {
            rules,
            outcome: None,
            reply,
        };
        let queue = self
            .queue
            .as_ref()
            .expect("the queue lives as long as the writer");
        let stopped = || Failure::Storage("the store's writer thread has stopped".into());
        queue.send(Box::new(rule)).map_err(|_| stopped())?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has already been reported; there is nothing to add.
            let _ = thread.join();
        }
    }
}

/// One transaction for `batch`, then the view and the accounts generation, then the answers.
fn run_batch(trees: &[sled::Tree], after: &AfterCommit, batch: Vec<Box<dyn Pending>>) {
    let batch = RefCell::new(batch);
    let written = Written::default();
    let outcome = transact_trees(trees, &written, |tx| {
        batch
            .borrow_mut()
            .iter_mut()
            .try_for_each(|rule| rule.run(tx))
    });
    let outcome = outcome.and_then(|()| after.publish(written).map_err(Failure::Storage));
    let failure = outcome.err();
    for rule in batch.into_inner() {
        rule.answer(failure.as_ref());
    }
}

/// One caller's rule, queued for the writer.
trait Pending: Send {
    /// Runs the rule in a savepoint of `tx`; only a failure of the whole batch is an error.
    fn run(&mut self, tx: &mut dyn Tx) -> TxResult<()>;
    /// Hands the caller its outcome, or the batch's failure.
    fn answer(self: Box<Self>, failure: Option<&Failure>);
}

struct Rule<T, F> {
    rules: F,
    /// What the last run returned (the batch may be re-run).
    outcome: Option<crate::domain::Result<T>>,
    reply: oneshot::Sender<Result<T, Failure>>,
}

impl<T, F> Pending for Rule<T, F>
where
    T: Send,
    F: Fn(&mut dyn Tx) -> TxResult<T> + Send,
{
    fn run(&mut self, tx: &mut dyn Tx) -> TxResult<()> {
        let mut savepoint = Savepoint {
            tx,
            writes: HashMap::new(),
        };
        self.outcome = match (self.rules)(&mut savepoint) {
            Ok(value) => {
                savepoint.release()?;
                Some(Ok(value))
            }
            Err(TxError::Abort(error)) => Some(Err(error)),
            Err(other) => return Err(other),
        };
        Ok(())
    }

    fn answer(self: Box<Self>, failure: Option<&Failure>) {
        let outcome = match (failure, self.outcome) {
            (Some(Failure::Storage(cause)), _) => Err(Failure::Storage(cause.clone())),
            (Some(Failure::Rule(error)), _) => {
                Err(Failure::Rule(Error::internal(error.to_string())))
            }
            (None, Some(outcome)) => outcome.map_err(Failure::Rule),
            (None, None) => Err(Failure::Rule(Error::internal("a batched rule never ran"))),
        };
        // A caller that gave up has nobody to tell.
        let _ = self.reply.send(outcome);
    }
}

/// One rule's writes, held apart until it returns Ok; its reads see them first.
struct Savepoint<'a> {
    tx: &'a mut dyn Tx,
    /// By (table index, key): the table and the value written (None: removed).
    writes: HashMap<(usize, Vec<u8>), Held>,
}

type Held = (Table, Option<Vec<u8>>);

impl Savepoint<'_> {
    /// Adds the rule's writes to the batch.
    fn release(self) -> TxResult<()> {
        for ((_, key), (table, value)) in self.writes {
            match value {
                Some(value) => self.tx.insert(table, &key, &value)?,
                None => self.tx.remove(table, &key)?,
            }
        }
        Ok(())
    }
}

impl Tx for Savepoint<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        match self.writes.get(&(table as usize, key.to_vec())) {
            Some((_, value)) => Ok(value.clone()),
            None => self.tx.get(table, key),
        }
    }

    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> TxResult<()> {
        let write = (table, Some(value.to_vec()));
        self.writes.insert((table as usize, key.to_vec()), write);
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> TxResult<()> {
        self.writes
            .insert((table as usize, key.to_vec()), (table, None));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::Pin, sync::Barrier, task::Poll};

    use super::*;
    use crate::store::kv::abort;
    use crate::store::tables::Trees;
    use crate::store::view::View;

    /// Rules queued together share one transaction: each reads what the ones before it
    /// wrote, and one that refuses takes back only its own writes.
    #[tokio::test]
    async fn a_refused_rule_in_a_batch_takes_back_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let trees = Trees::open(&db).unwrap();
        let all: Vec<sled::Tree> = Table::ALL.iter().map(|&t| trees.get(t).clone()).collect();
        let view = Arc::new(View::default());
        let after = Arc::new(AfterCommit::new(vec![], view));
        let writer = Writer::start(all, Arc::new(RwLock::new(())), after).unwrap();
        // The first rule holds its batch open until the three behind it are queued: they
        // make the next batch, in the order queued.
        let (entered, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let (e, g) = (entered.clone(), go.clone());
        let mut first = Box::pin(writer.run(move |_| {
            e.wait();
            g.wait();
            Ok(0)
        }));
        assert!(pending(&mut first).await);
        tokio::task::spawn_blocking(move || entered.wait())
            .await
            .unwrap();
        let mut sets_a = Box::pin(writer.run(|tx| {
            tx.insert(Table::Meta, b"a", b"1")?;
            Ok(1)
        }));
        let mut refuses = Box::pin(writer.run(|tx| {
            assert_eq!(tx.get(Table::Meta, b"a")?.as_deref(), Some(&b"1"[..]));
            tx.insert(Table::Meta, b"b", b"refused")?;
            abort::<u8>(Error::invalid("refused"))
        }));
        let mut reads = Box::pin(writer.run(|tx| {
            assert_eq!(
                tx.get(Table::Meta, b"b")?,
                None,
                "a refused rule's write leaked"
            );
            let a = tx
                .get(Table::Meta, b"a")?
                .expect("written by the rule before");
            tx.insert(Table::Meta, b"c", &a)?;
            Ok(3)
        }));
        assert!(pending(&mut sets_a).await);
        assert!(pending(&mut refuses).await);
        assert!(pending(&mut reads).await);
        tokio::task::spawn_blocking(move || go.wait())
            .await
            .unwrap();
        assert!(matches!(first.await, Ok(0)));
        assert!(matches!(sets_a.await, Ok(1)));
        assert!(matches!(
            refuses.await,
            Err(Failure::Rule(Error::InvalidArgument(_)))
        ));
        assert!(matches!(reads.await, Ok(3)));
        assert_eq!(trees.meta.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(trees.meta.get(b"b").unwrap(), None);
        assert_eq!(trees.meta.get(b"c").unwrap().as_deref(), Some(&b"1"[..]));
    }

    /// Polls `future` once (a rule is queued when its `run` is first polled).
    async fn pending<F: Future + Unpin>(future: &mut F) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx).is_pending())).await
    }
}
