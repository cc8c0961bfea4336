//! Batches waiting for the write gate, sent together when the bridge is behind: while one of the bridge's
//! batches is in flight, the batches of late jobs that queue behind it go out as one request when its turn
//! comes (group commit).
//!
//! A request costs PocketBase about the same whatever it carries: its HTTP exchange, the superuser token's
//! check, its request log row and a transaction. At 200 changes a second, where jobs start one to four
//! seconds after their change, the write-backs waited for the one write in flight
//! (`pocketbase.max_writes_in_flight`) and each went out alone, one request per change. But PocketBase holds
//! its write lock for a whole batch, and a person's write that comes meanwhile waits behind all of it: sent
//! together at 50 changes a second, the write-backs a status round finds at once took the p99 overhead of a
//! person's change reaching Coolify from +5-7 ms to +19-25 ms, and to +12-16 ms with at most four requests in
//! a batch (docs/BENCHMARKS.md, "Forty-first session"). So only the write-back of a
//! job that started [`BEHIND`] or more after its change may join others ([`behind`]): when changes wait that
//! long for the bridge, the requests saved are worth more than a few milliseconds of a person's write. A
//! batch that finds the gate free goes at once, and while the flood sign is up each goes alone: the gate then
//! spaces writes to leave PocketBase's cores to the flood.
//!
//! PocketBase carries a batch out all or nothing. When one request of a combined batch fails, the others
//! were rolled back with it: the batch it came from gets the failure (its index counted within that batch),
//! and the others are sent again without it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::error::PbError;

/// Requests in one combined batch: the project's migration allows 50, and PocketBase holds its write lock
/// for the whole batch, so a person's write waits behind all of it; 16 is eight write-backs with a row each.
pub const MAX_REQUESTS: usize = 16;

/// How late a job starts after its oldest change for its write-back to join others.
pub const BEHIND: Duration = Duration::from_secs(1);

tokio::task_local! {
    static LATE: bool;
}

/// Runs a job's work; `late`: it started [`BEHIND`] or more after its oldest change, so its batches may
/// go out with others.
pub async fn behind<F: Future>(late: bool, work: F) -> F::Output {
    LATE.scope(late, work).await
}

fn late() -> bool {
    LATE.try_with(|late| *late).unwrap_or(false)
}

type Answer = Result<Vec<serde_json::Value>, PbError>;

/// One caller's batch (its requests `R`), waiting to be sent.
pub(super) struct Waiting<R> {
    id: u64,
    /// It may go out with others (see [`behind`]).
    joins: bool,
    pub(super) requests: Vec<R>,
    answer: oneshot::Sender<Answer>,
}

/// See the module documentation.
pub(super) struct Combiner<R> {
    waiting: Mutex<VecDeque<Waiting<R>>>,
    /// One permit per combined batch in flight: as many as the write gate lets through.
    senders: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl<R> Combiner<R> {
    pub(super) fn new(in_flight: usize) -> Combiner<R> {
        Combiner {
            waiting: Mutex::new(VecDeque::new()),
            senders: Arc::new(Semaphore::new(in_flight.max(1))),
            next_id: AtomicU64::new(0),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<R>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `requests` (to go out with others if the calling job is late, see [`behind`]); the waiter
    /// answers them (see [`Waiter::answer`]) and, dropped first, takes them back out of the queue.
    pub(super) fn wait(&self, requests: Vec<R>) -> Waiter<'_, R> {
        self.wait_joining(requests, late())
    }

    fn wait_joining(&self, requests: Vec<R>, joins: bool) -> Waiter<'_, R> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        self.queue().push_back(Waiting {
            id,
            joins,
            requests,
            answer,
        });
        Waiter { combiner: self, id, rx }
    }

    /// A turn to send: given back when the combined batch is answered.
    pub(super) async fn turn(&self) -> Result<OwnedSemaphorePermit, PbError> {
        self.senders
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PbError::Transport("the bridge's PocketBase batch queue is closed".into()))
    }

    /// The oldest waiting batch, with those after it that may join it and fit in one request (none when
    /// `alone`), if `id` still waits: otherwise a sender before took it, and its answer is on its way.
    pub(super) fn take(&self, id: u64, alone: bool) -> Option<Vec<Waiting<R>>> {
        let mut queue = self.queue();
        if !queue.iter().any(|w| w.id == id) {
            return None;
        }
        let mut group: Vec<Waiting<R>> = Vec::new();
        let mut requests = 0;
        while let Some(next) = queue.front() {
            let fits = requests + next.requests.len() <= MAX_REQUESTS;
            if !group.is_empty() && (alone || !fits || !next.joins || !group[0].joins) {
                break;
            }
            requests += next.requests.len();
            group.extend(queue.pop_front());
        }
        Some(group)
    }
}

/// A caller's place in the queue.
pub(super) struct Waiter<'a, R> {
    combiner: &'a Combiner<R>,
    id: u64,
    rx: oneshot::Receiver<Answer>,
}

impl<R> Waiter<'_, R> {
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The answer to this caller's requests, in their order.
    pub(super) async fn answer(&mut self) -> Answer {
        (&mut self.rx)
            .await
            .unwrap_or_else(|_| Err(PbError::Transport("the request carrying this batch was dropped".into())))
    }
}

impl<R> Drop for Waiter<'_, R> {
    fn drop(&mut self) {
        self.combiner.queue().retain(|w| w.id != self.id);
    }
}

/// Gives each batch of `group` its part of the combined request's `result`; answers the batches to send
/// again: those rolled back only because another's request failed.
pub(super) fn share<R>(group: Vec<Waiting<R>>, result: Answer) -> Vec<Waiting<R>> {
    match result {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            for w in group {
                let mine = answers.by_ref().take(w.requests.len()).collect();
                let _ = w.answer.send(Ok(mine));
            }
            Vec::new()
        }
        Err(PbError::Batch { index, error }) if group.len() > 1 => {
            let mut start = 0;
            let mut blamed = None;
            let mut again = Vec::new();
            for w in group {
                let n = w.requests.len();
                if blamed.is_none() && (start..start + n).contains(&index) {
                    blamed = Some((w, index - start));
                } else {
                    again.push(w);
                }
                start += n;
            }
            match blamed {
                Some((w, own_index)) => {
                    let _ = w.answer.send(Err(PbError::Batch {
                        index: own_index,
                        error,
                    }));
                    again
                }
                // An index outside the request: nobody to blame, so nothing is known to be worth re-sending.
                None => {
                    let e = PbError::Batch { index, error };
                    for w in again {
                        let _ = w.answer.send(Err(e.clone()));
                    }
                    Vec::new()
                }
            }
        }
        Err(e) => {
            for w in group {
                let _ = w.answer.send(Err(e.clone()));
            }
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn requests(n: usize) -> Vec<u32> {
        vec![0; n]
    }

    #[test]
    fn the_oldest_batches_that_fit_go_together_and_alone_in_a_flood() {
        let c = Combiner::new(1);
        let sizes = [1, 1, MAX_REQUESTS - 2, 1, 2];
        let waiters: Vec<Waiter<'_, u32>> = sizes.iter().map(|&n| c.wait_joining(requests(n), true)).collect();
        let ids: Vec<u64> = waiters.iter().map(|w| w.id()).collect();

        let first = c.take(ids[4], false).expect("still waiting");
        assert_eq!(
            first.iter().map(|w| w.id).collect::<Vec<_>>(),
            ids[..3],
            "the oldest first, up to {MAX_REQUESTS} requests"
        );
        assert!(
            c.take(ids[0], false).is_none(),
            "a batch already taken is not sent twice"
        );
        let alone = c.take(ids[4], true).expect("still waiting");
        assert_eq!(alone.iter().map(|w| w.id).collect::<Vec<_>>(), [ids[3]]);

        drop(waiters);
        assert!(c.queue().is_empty(), "a caller that gave up leaves nothing queued");
    }

    #[test]
    fn a_batch_larger_than_the_limit_still_goes_alone() {
        let c = Combiner::new(1);
        let big = c.wait_joining(requests(MAX_REQUESTS + 5), true);
        let next = c.wait_joining(requests(1), true);
        let group = c.take(big.id(), false).expect("waiting");
        assert_eq!(group.iter().map(|w| w.id).collect::<Vec<_>>(), [big.id()]);
        assert!(c.take(next.id(), false).is_some());
    }

    #[tokio::test]
    async fn only_the_batches_of_late_jobs_go_together() {
        let c = Combiner::new(1);
        let on_time = c.wait(requests(1));
        let late_ones = behind(true, async { [c.wait(requests(1)), c.wait(requests(1))] }).await;
        let after = c.wait(requests(1));
        let ids = |group: Vec<Waiting<u32>>| group.iter().map(|w| w.id).collect::<Vec<_>>();

        assert_eq!(ids(c.take(on_time.id(), false).expect("waiting")), [on_time.id()]);
        assert_eq!(
            ids(c.take(after.id(), false).expect("waiting")),
            [late_ones[0].id(), late_ones[1].id()],
            "a batch of a job on time joins no other"
        );
        assert_eq!(ids(c.take(after.id(), false).expect("waiting")), [after.id()]);
    }

    #[tokio::test]
    async fn each_batch_gets_its_own_answers_and_a_failure_blames_only_its_own() {
        let c = Combiner::new(1);
        let mut a = c.wait(requests(2));
        let mut b = c.wait(requests(3));
        let mut d = c.wait(requests(1));
        let group: Vec<Waiting<u32>> = c.queue().drain(..).collect();
        let answers = (0..6).map(|i| json!({ "n": i })).collect();
        assert!(share(group, Ok(answers)).is_empty());
        assert_eq!(a.answer().await.expect("answered"), [json!({"n": 0}), json!({"n": 1})]);
        assert_eq!(
            b.answer().await.expect("answered"),
            [json!({"n": 2}), json!({"n": 3}), json!({"n": 4})]
        );
        assert_eq!(d.answer().await.expect("answered"), [json!({"n": 5})]);

        // Request 3 of the combined batch is the second request of the second caller's.
        let mut a = c.wait(requests(2));
        let mut b = c.wait(requests(3));
        let d = c.wait(requests(1));
        let group: Vec<Waiting<u32>> = c.queue().drain(..).collect();
        let failed = PbError::Batch {
            index: 3,
            error: Box::new(PbError::NotFound),
        };
        let again = share(group, Err(failed));
        assert!(matches!(
            b.answer().await,
            Err(PbError::Batch { index: 1, error }) if matches!(*error, PbError::NotFound)
        ));
        assert_eq!(
            again.iter().map(|w| w.id).collect::<Vec<_>>(),
            [a.id(), d.id()],
            "the others are sent again, in their order"
        );
        assert!(share(again, Err(PbError::Transport("down".into()))).is_empty());
        assert!(matches!(a.answer().await, Err(PbError::Transport(_))));
    }
}
