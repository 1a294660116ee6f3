//! The committer: one thread that appends frames to the event log and
//! flushes the database, serving everything queued meanwhile with one fsync.
//!
//! Being the only writer of the log tree, it assigns event ids in order
//! without locks, so a reader never sees id `n + 1` before id `n`. It
//! publishes the last durable id only after the flush, which is what the
//! consumers follow: they never apply an event that could still be lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::StoreError;
use crate::events::log::{self, StoredFrame};

/// Most jobs served by one flush.
const MAX_GROUP: usize = 4096;
/// Under concurrent load (the last flush served several jobs) the committer
/// waits up to this long for as many jobs as the last flush served: far
/// fewer fsyncs and sled I/O wake-ups for a bounded extra latency.
const LINGER: Duration = Duration::from_micros(700);

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// First id of the frame (for a duplicate: the stored last id).
    pub first_id: u64,
    pub last_id: u64,
    /// Events appended (0 for a duplicate).
    pub count: u64,
    pub duplicate: bool,
}

/// A frame to append.
pub struct AppendJob {
    pub events: Vec<String>,
    pub producer: Option<(String, u64)>,
    pub received: Instant,
    pub reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Work for the committer.
pub enum Job {
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Append(AppendJob),
}

/// Sends jobs to the committer.
pub struct Handle(flume::Sender<Job>);

impl Handle {
    pub fn send(&self, job: Job) -> Result<(), StoreError> {
        self.0.send(job).map_err(|_| StoreError::Closed)
    }
}

/// Starts the committer thread; returns its handle and the durable id.
pub fn start(db: sled::Db, tree: sled::Tree) -> Result<(Handle, watch::Receiver<u64>), StoreError> {
    let next_id = log::next_id(&tree)?;
    let (durable_tx, durable_rx) = watch::channel(next_id - 1);
    let (tx, rx) = flume::unbounded();
    let mut committer = Committer {
        db,
        tree,
        next_id,
        producers: HashMap::new(),
        durable: durable_tx,
    };
    std::thread::Builder::new()
        .name("varcade-committer".into())
        .spawn(move || {
            let mut last_group = 0;
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                jobs.extend(rx.try_iter().take(MAX_GROUP - 1));
                if last_group > 1 {
                    // Expect about as many jobs as last time, but not for long.
                    let deadline = Instant::now() + LINGER;
                    while jobs.len() < last_group.min(MAX_GROUP) {
                        match rx.recv_deadline(deadline) {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                }
                last_group = jobs.len();
                committer.commit(jobs);
            }
        })
        .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
    Ok((Handle(tx), durable_rx))
}

struct Committer {
    db: sled::Db,
    tree: sled::Tree,
    next_id: u64,
    /// Producer -> (highest seq, last id of that envelope).
    producers: HashMap<String, (u64, u64)>,
    durable: watch::Sender<u64>,
}

type Reply = (
    oneshot::Sender<Result<Appended, StoreError>>,
    Result<Appended, StoreError>,
    Instant,
);

impl Committer {
    fn commit(&mut self, jobs: Vec<Job>) {
        let mut flushes = Vec::new();
        let mut replies: Vec<Reply> = Vec::new();
        let mut batch = sled::Batch::default();
        let start_id = self.next_id;
        let ts_ms = crate::game::now_us() / 1000;
        let mut frames = 0;
        for job in jobs {
            match job {
                Job::Flush(reply) => flushes.push(reply),
                Job::Append(job) => {
                    let appended =
                        self.stage(&mut batch, job.events, job.producer, ts_ms, &mut frames);
                    replies.push((job.reply, appended, job.received));
                }
            }
        }
        let result = self.write(batch, frames > 0);
        match result {
            Ok(()) => {
                if self.next_id != start_id {
                    self.durable.send_replace(self.next_id - 1);
                }
                for (reply, appended, received) in replies {
                    crate::metrics::ack_latency(received.elapsed());
                    let _ = reply.send(appended);
                }
                for reply in flushes {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed");
                // The tree is the truth (the batch may or may not be in it):
                // reload the counter, and let the producer cache refill.
                self.next_id = log::next_id(&self.tree).unwrap_or(start_id);
                self.producers.clear();
                for (reply, ..) in replies {
                    let _ = reply.send(Err(StoreError::Failed(e.to_string())));
                }
                for reply in flushes {
                    let _ = reply.send(Err(StoreError::Failed(e.to_string())));
                }
            }
        }
    }

    /// Adds one frame to the batch (or recognises a duplicate envelope).
    /// An error rejects this frame only; the rest of the group goes on.
    fn stage(
        &mut self,
        batch: &mut sled::Batch,
        events: Vec<String>,
        producer: Option<(String, u64)>,
        ts_ms: u64,
        frames: &mut usize,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Err(StoreError::Failed(
                "an empty frame cannot be appended".into(),
            ));
        }
        if let Some((name, seq)) = &producer {
            let (stored_seq, stored_last) = self.producer(name)?;
            if *seq <= stored_seq {
                return Ok(Appended {
                    first_id: stored_last,
                    last_id: stored_last,
                    count: 0,
                    duplicate: true,
                });
            }
        }
        let count = events.len() as u64;
        let first_id = self.next_id;
        let last_id = first_id + count - 1;
        let bytes = postcard::to_stdvec(&StoredFrame { ts_ms, events })?;
        batch.insert(&log::frame_key(first_id), bytes);
        self.next_id = last_id + 1;
        batch.insert(log::NEXT_ID_KEY, &self.next_id.to_be_bytes());
        if let Some((name, seq)) = producer {
            batch.insert(
                log::producer_key(&name),
                &log::encode_producer(seq, last_id),
            );
            self.producers.insert(name, (seq, last_id));
        }
        *frames += 1;
        Ok(Appended {
            first_id,
            last_id,
            count,
            duplicate: false,
        })
    }

    /// A producer's highest seq and last id (cached after the first read).
    fn producer(&mut self, name: &str) -> Result<(u64, u64), StoreError> {
        if let Some(p) = self.producers.get(name) {
            return Ok(*p);
        }
        let stored = self
            .tree
            .get(log::producer_key(name))?
            .and_then(|v| log::decode_producer(&v))
            .unwrap_or((0, 0));
        self.producers.insert(name.to_string(), stored);
        Ok(stored)
    }

    fn write(&self, batch: sled::Batch, has_frames: bool) -> Result<(), StoreError> {
        if has_frames {
            self.tree.apply_batch(batch)?;
        }
        let started = Instant::now();
        self.db.flush()?;
        crate::metrics::flush_latency(started.elapsed());
        Ok(())
    }
}
