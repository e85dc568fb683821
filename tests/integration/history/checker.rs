//! A linearizability checker: Wing & Gong's search with Lowe's memoization (the algorithm
//! porcupine and etcd's robustness tests use), over any sequential model.
//!
//! A history is a set of operations, each with the instant it was invoked and, if the client
//! saw an outcome, the instant it returned and that outcome. It is linearizable when the
//! operations can be put in one order that respects real time (an operation that returned
//! before another was invoked comes first) in which the model, applied in turn, gives every
//! outcome the clients saw. An operation without an outcome (the server died, the call timed
//! out) may have taken effect at any point after its invocation, or never.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: what an operation does to a state and what it returns.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Op: std::fmt::Debug;
    type Outcome: std::fmt::Debug;
    /// Applies `op` to `state`: the state after it, if the model can answer `seen` (None:
    /// outcome unknown, any answer the model gives is fine).
    fn step(
        &self,
        state: &Self::State,
        op: &Self::Op,
        seen: Option<&Self::Outcome>,
    ) -> Option<Self::State>;

    /// Whether `later` means nothing without `earlier` (a validation of a secret without the
    /// operation that made it): minimizing keeps `earlier` while `later` is kept.
    fn needs(&self, _later: &Self::Op, _earlier: &Self::Op) -> bool {
        false
    }
}

/// One operation of a history; times are on one monotonic clock (any unit).
#[derive(Debug, Clone)]
pub struct Entry<Op, Outcome> {
    pub op: Op,
    pub invoked: u64,
    /// When it returned, and with what; None if the client never learnt the outcome.
    pub returned: Option<(u64, Outcome)>,
}

/// Whether `history` is linearizable from `init` under `model`.
pub fn linearizable<M: Model>(
    model: &M,
    init: &M::State,
    history: &[Entry<M::Op, M::Outcome>],
) -> bool {
    Search::new(model, history).run(init.clone())
}

/// The depth-first search over "which operation takes effect next", iterative so that long
/// histories cannot overflow the stack.
struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Entry<M::Op, M::Outcome>],
    /// Operations to try, in the order they are tried: completed ones by invocation, then
    /// those of unknown outcome (placed only when a completed one needs them before it).
    order: Vec<usize>,
    done: Vec<bool>,
    /// Completed operations not yet placed.
    open: usize,
    /// (placed set, state) pairs already explored: reaching one again cannot succeed.
    seen: HashSet<(Vec<u64>, M::State)>,
}

/// One level of the search: the state before the operation placed here, the candidates still
/// to try at this level (tried from the end), and the operation placed (if any).
struct Frame<S> {
    state: S,
    candidates: Vec<usize>,
    placed: Option<usize>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, history: &'a [Entry<M::Op, M::Outcome>]) -> Self {
        let mut order: Vec<usize> = (0..history.len()).collect();
        order.sort_by_key(|&i| (history[i].returned.is_none(), history[i].invoked));
        Search {
            model,
            history,
            order,
            done: vec![false; history.len()],
            open: history.iter().filter(|e| e.returned.is_some()).count(),
            seen: HashSet::new(),
        }
    }

    /// Operations that may take effect next: invoked no later than every unplaced completed
    /// operation returned (else real time would be violated; an instant operation, invoked and
    /// returned at one tick, may go first). Reversed: the frame pops from the end.
    fn candidates(&self) -> Vec<usize> {
        let horizon = self
            .history
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.done[*i])
            .filter_map(|(_, e)| e.returned.as_ref().map(|(at, _)| *at))
            .min()
            .unwrap_or(u64::MAX);
        let mut next: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| !self.done[i] && self.history[i].invoked <= horizon)
            .collect();
        next.reverse();
        next
    }

    fn key(&self, state: &M::State) -> (Vec<u64>, M::State) {
        let mut bits = vec![0u64; self.done.len().div_ceil(64)];
        for (i, _) in self.done.iter().enumerate().filter(|(_, d)| **d) {
            bits[i / 64] |= 1 << (i % 64);
        }
        (bits, state.clone())
    }

    fn run(mut self, init: M::State) -> bool {
        let mut stack = vec![Frame {
            candidates: self.candidates(),
            state: init,
            placed: None,
        }];
        while let Some(frame) = stack.last_mut() {
            if self.open == 0 {
                return true;
            }
            let Some(next) = frame.candidates.pop() else {
                let frame = stack.pop().expect("not empty");
                if let Some(i) = frame.placed {
                    self.unplace(i);
                }
                continue;
            };
            let entry = &self.history[next];
            let seen = entry.returned.as_ref().map(|(_, o)| o);
            let Some(after) = self.model.step(&frame.state, &entry.op, seen) else {
                continue;
            };
            self.place(next);
            if !self.seen.insert(self.key(&after)) {
                self.unplace(next);
                continue;
            }
            stack.push(Frame {
                candidates: self.candidates(),
                state: after,
                placed: Some(next),
            });
        }
        false
    }

    fn place(&mut self, i: usize) {
        self.done[i] = true;
        if self.history[i].returned.is_some() {
            self.open -= 1;
        }
    }

    fn unplace(&mut self, i: usize) {
        self.done[i] = false;
        if self.history[i].returned.is_some() {
            self.open += 1;
        }
    }
}

/// A 1-minimal failing sub-history: operations are dropped one at a time (latest invoked
/// first) as long as what is left still fails, so every operation left is needed to show the
/// violation (or is needed by one that is, [`Model::needs`]).
pub fn minimize<M: Model>(
    model: &M,
    init: &M::State,
    history: &[Entry<M::Op, M::Outcome>],
) -> Vec<Entry<M::Op, M::Outcome>>
where
    M::Op: Clone,
    M::Outcome: Clone,
{
    let mut kept: Vec<Entry<M::Op, M::Outcome>> = history.to_vec();
    kept.sort_by_key(|e| e.invoked);
    let mut i = kept.len();
    while i > 0 {
        i -= 1;
        if kept.iter().any(|e| model.needs(&e.op, &kept[i].op)) {
            continue;
        }
        let mut without = kept.clone();
        without.remove(i);
        if !linearizable(model, init, &without) {
            kept = without;
        }
    }
    kept
}
