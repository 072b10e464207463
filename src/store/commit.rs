//! Group commit: every write goes through one queue; whoever finds no commit under way leads,
//! runs everything queued in one transaction (each write in a savepoint of its own, so one
//! failed write rolls back only itself), commits once and, if any write asked for it, syncs
//! the write-ahead log once. Writers that arrive meanwhile wait for the next batch.
//!
//! A lone write never waits for a batch: it finds no leader and commits at once, on the
//! caller's thread (a thread hop costs more than the statements). Under load the leader
//! commits its own batch, then hands the queue to a blocking thread that keeps committing
//! batches until it is empty, so no caller is held up by others' writes.
//!
//! Durability: SQLite runs with `synchronous = NORMAL` in WAL mode, so a commit is atomic and
//! ordered but reaches the disk only at the next sync of the log. A write that acknowledges
//! something (a message accepted, a message about to be delivered, a cancel, a session
//! change) asks for [`Durability::Synced`]: the batch's commit is followed by `fdatasync` of
//! the log, which makes it and every earlier commit survive power loss. Other writes (a
//! finished message's outcome, bookkeeping) are [`Durability::Lazy`]: durable at the next
//! synced commit or checkpoint (the checkpoint thread runs one within about a second).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::db::Db;
use super::{Inner, StoreError};

/// Whether a write must be on disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Synced before the call returns: it survives power loss once acknowledged.
    Synced,
    /// Committed (atomic, visible) at once, synced with the next synced write or checkpoint.
    Lazy,
}

/// What to do once the batch is committed (or failed): answer the writer.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What a write's work reports: whether it worked, how durable it must be (known only once
/// it ran, for some writes), and how to answer its writer.
type Ran = (Result<(), StoreError>, Durability, Answer);

/// A write's work: run inside the batch's transaction (or not at all, given no connection).
type Work = Box<dyn FnOnce(Option<&mut Db>) -> Ran + Send>;

/// A queued write: its work, run by the leader inside the batch's transaction.
pub(super) struct Job {
    run: Work,
}

/// Writes waiting for a commit, and whether someone is committing.
#[derive(Default)]
pub(super) struct Queue {
    jobs: Vec<Job>,
    leading: bool,
}

/// Commits and syncs done, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Writes committed (each one queued write).
    pub writes: u64,
    /// Transactions committed (a batch of writes each).
    pub commits: u64,
    /// Syncs of the write-ahead log.
    pub syncs: u64,
}

impl Job {
    /// `work` as a queued write whose result goes to `reply` once its batch is committed;
    /// `work` also says how durable it must be (it may depend on what it found).
    pub(super) fn new<T, F>(
        work: F,
        reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    ) -> Self
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<(T, Durability), StoreError> + Send + 'static,
    {
        Self {
            run: Box::new(move |db| {
                let result = db.map_or(Err(StoreError::Closed), work);
                let durability = match &result {
                    Ok((_, durability)) => *durability,
                    Err(_) => Durability::Lazy,
                };
                let status = result.as_ref().map(|_| ()).map_err(Clone::clone);
                let answer: Answer = Box::new(move |committed| {
                    let _ = reply.send(committed.and(result.map(|(value, _)| value)));
                });
                (status, durability, answer)
            }),
        }
    }
}

/// Queues `job`; if no commit is under way, commits it (and whatever queued meanwhile) now.
pub(super) fn submit(inner: &Arc<Inner>, job: Job) {
    let lead = {
        let mut queue = lock_queue(inner);
        queue.jobs.push(job);
        !std::mem::replace(&mut queue.leading, true)
    };
    if !lead {
        return;
    }
    commit_batch(inner);
    // More arrived while this batch committed: keep them moving, but not on this caller's
    // time.
    let more = {
        let mut queue = lock_queue(inner);
        if queue.jobs.is_empty() {
            queue.leading = false;
        }
        queue.leading
    };
    if more {
        let inner = inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || commit_until_empty(&inner));
            }
            Err(_) => commit_until_empty(&inner),
        }
    }
}

/// Commits batches until the queue is empty, then gives up the lead.
fn commit_until_empty(inner: &Arc<Inner>) {
    loop {
        {
            let mut queue = lock_queue(inner);
            if queue.jobs.is_empty() {
                queue.leading = false;
                return;
            }
        }
        commit_batch(inner);
    }
}

/// How many writes wait for a commit.
#[cfg(test)]
pub(super) fn queued(inner: &Inner) -> usize {
    lock_queue(inner).jobs.len()
}

fn lock_queue(inner: &Inner) -> std::sync::MutexGuard<'_, Queue> {
    // A panic while holding the queue lock (a push or a take) leaves it consistent.
    inner
        .commits
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes the connection, then everything queued (writers that arrive while the leader waits
/// for the connection join this batch), runs it in one transaction, commits, syncs the log if
/// any write asked for it, and answers every writer.
fn commit_batch(inner: &Arc<Inner>) {
    let (answers, mut committed, durable) = {
        let mut guard = inner.lock_db();
        let jobs = std::mem::take(&mut lock_queue(inner).jobs);
        if jobs.is_empty() {
            return;
        }
        inner
            .stats
            .writes
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let (answers, committed, durable) = match guard.as_mut() {
            None => {
                let (answers, failed) = refuse(jobs, &StoreError::Closed);
                (answers, failed, false)
            }
            Some(db) => run_in_transaction(db, jobs),
        };
        if committed.is_ok() {
            inner.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        (answers, committed, durable)
    };
    // The sync happens outside the connection's lock: readers go on meanwhile.
    if durable && committed.is_ok() {
        committed = inner.sync_log();
        if committed.is_ok() {
            inner.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }
    for answer in answers {
        answer(committed.clone());
    }
}

/// Every job, not run, to be answered with `error`.
fn refuse(jobs: Vec<Job>, error: &StoreError) -> (Vec<Answer>, Result<(), StoreError>) {
    let answers = jobs.into_iter().map(|job| (job.run)(None).2).collect();
    (answers, Err(error.clone()))
}

/// Runs `jobs` in one transaction, each in a savepoint of its own, and commits. Returns the
/// answers still to give (with the commit's outcome), that outcome, and whether a committed
/// write must be synced.
fn run_in_transaction(db: &mut Db, jobs: Vec<Job>) -> (Vec<Answer>, Result<(), StoreError>, bool) {
    if let Err(error) = db.begin_batch() {
        let (answers, failed) = refuse(jobs, &error);
        return (answers, failed, false);
    }
    if jobs.len() == 1 {
        return run_alone(db, jobs);
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let mut durable = false;
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let (status, durability, answer) = db.in_savepoint(job.run);
        match status {
            Err(error) if db.transaction_lost() => {
                // SQLite rolled the whole transaction back (disk full, an I/O error): the
                // writes before this one are gone too. Start again for the rest.
                for earlier in answers.drain(..) {
                    earlier(Err(error.clone()));
                }
                answer(Err(error));
                durable = false;
                if let Err(error) = db.begin_batch() {
                    let (rest, failed) = refuse(jobs.collect(), &error);
                    return (rest, failed, false);
                }
            }
            _ => {
                durable |= durability == Durability::Synced;
                answers.push(answer);
            }
        }
    }
    let committed = db.commit_batch();
    (answers, committed, durable)
}

/// One write alone in its transaction (the common case when writers do not overlap): no
/// savepoint needed, the transaction is its unit.
fn run_alone(db: &mut Db, jobs: Vec<Job>) -> (Vec<Answer>, Result<(), StoreError>, bool) {
    let mut answers = Vec::with_capacity(1);
    let mut durable = false;
    let mut committed = Ok(());
    for job in jobs {
        let (status, durability, answer) = (job.run)(Some(&mut *db));
        match status {
            Ok(()) => {
                committed = db.commit_batch();
                durable = durability == Durability::Synced;
            }
            Err(_) => {
                // Its own error is its answer; nothing of it is kept.
                db.rollback_batch();
            }
        }
        answers.push(answer);
    }
    (answers, committed, durable)
}
