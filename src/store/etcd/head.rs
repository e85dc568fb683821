//! The durable head of a replica: the log head its watched copy holds, and the channel that
//! announces it to the revocation streams.

use tokio::sync::watch;

/// The durable head and the channel that announces it. While the cluster cannot be reached
/// the sender is dropped, which ends every revocation stream of this replica (a stream that
/// went on sending checkpoints would vouch for a freshness the replica cannot see); a new
/// channel is made when the cluster answers again.
pub(super) struct Head {
    inner: std::sync::Mutex<HeadInner>,
}

struct HeadInner {
    value: u64,
    sender: Option<watch::Sender<u64>>,
    receiver: watch::Receiver<u64>,
}

impl Head {
    pub(super) fn new() -> Head {
        let (sender, receiver) = watch::channel(0);
        Head {
            inner: std::sync::Mutex::new(HeadInner {
                value: 0,
                sender: Some(sender),
                receiver,
            }),
        }
    }

    pub(super) fn value(&self) -> u64 {
        self.lock().value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeadInner> {
        self.inner.lock().expect("head lock is never poisoned")
    }

    /// Moves the head forward (never back) and wakes the streams.
    pub fn advance(&self, head: u64) {
        let mut inner = self.lock();
        inner.value = inner.value.max(head);
        let value = inner.value;
        if let Some(sender) = &inner.sender {
            sender.send_if_modified(|durable| {
                let advanced = value > *durable;
                *durable = value;
                advanced
            });
        }
    }

    pub(super) fn receiver(&self) -> watch::Receiver<u64> {
        self.lock().receiver.clone()
    }

    /// Ends every stream following the head (the cluster is out of reach).
    pub(super) fn stop(&self) {
        self.lock().sender.take();
    }

    /// A new channel, from the current head (the cluster answers again).
    pub(super) fn restart(&self) {
        let mut inner = self.lock();
        if inner.sender.is_none() {
            let (sender, receiver) = watch::channel(inner.value);
            inner.sender = Some(sender);
            inner.receiver = receiver;
        }
    }
}
