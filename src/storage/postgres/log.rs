//! The event log on PostgreSQL: appends, reads, cursors and retention.
//!
//! A node's appends wait on a bounded queue; one task takes every queued
//! frame (a group) and appends them in one transaction that first locks
//! the `log_head` row. Ids are handed out under that lock and the row is
//! moved before the commit, so a later id always commits later: a reader
//! that follows `id > cursor` never skips an event that commits late. The
//! idempotent producers' state (envelope seqs, RESP IDMP iids) is read and
//! written in the same transaction, so a duplicate is recognised on every
//! node. Each frame is answered only after the commit.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Cached, Inner, PgStorage, big, pg, unbig};
use crate::app::ports::{
    Appended, ConsumerName, EventLog, LoggedEvent, NewFrame, PendingAppend, StorageError,
};
use crate::domain::event::Dedup;
use crate::infra::metrics;

/// Most frames one transaction appends.
const MAX_GROUP: usize = 1024;

/// A frame waiting for its transaction, and where its answer goes.
pub struct AppendJob {
    frame: NewFrame,
    /// When it was queued (for the ack latency).
    received: std::time::Instant,
    reply: oneshot::Sender<Result<Appended, StorageError>>,
}

/// Appends queued frames, a group per transaction, until the stop; the
/// frames queued by then are still appended and answered.
pub async fn appender(
    inner: Arc<Inner>,
    queue: flume::Receiver<AppendJob>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            job = queue.recv_async() => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            _ = stop.cancelled() => match queue.try_recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (frames, replies): (Vec<NewFrame>, Vec<_>) = jobs
            .into_iter()
            .map(|j| (j.frame, (j.received, j.reply)))
            .unzip();
        let started = std::time::Instant::now();
        let answers = inner.watch(append_group(&inner, frames).await);
        match answers {
            Ok(answers) => {
                metrics::flush_latency(started.elapsed());
                if let Some(last) = answers.iter().flatten().map(|a| a.last_id).max() {
                    inner.publish_durable(last);
                }
                for ((received, reply), answer) in replies.into_iter().zip(answers) {
                    metrics::ack_latency(received.elapsed());
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A frame's events as one JSON array text.
fn events_json(events: &[String]) -> String {
    let mut json = String::with_capacity(2 + events.iter().map(|e| e.len() + 1).sum::<usize>());
    json.push('[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(event);
    }
    json.push(']');
    json
}

/// An IDMP producer as the group sees it: its iids (→ first id), the
/// number of its newest, and how many it keeps.
#[derive(Default)]
struct IdmpState {
    ids: HashMap<String, u64>,
    newest: i64,
    keep: usize,
    touched: bool,
}

/// Appends a group of frames in one transaction; each frame's answer
/// (an empty frame is refused alone).
async fn append_group(
    inner: &Inner,
    frames: Vec<NewFrame>,
) -> Result<Vec<Result<Appended, StorageError>>, StorageError> {
    let mut client = inner.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    let head = tx
        .cq_one("SELECT next_id FROM log_head FOR UPDATE", &[])
        .await
        .map_err(pg)?;
    let mut next = unbig(head.get(0));
    let ts_ms = big(crate::storage::append_ms());

    let mut envelope_names = Vec::new();
    let mut idmp_names = Vec::new();
    let mut idmp_iids = Vec::new();
    for frame in &frames {
        match &frame.dedup {
            Some(Dedup::Envelope { producer, .. }) => envelope_names.push(producer.clone()),
            Some(Dedup::Idmp { producer, iid, .. }) => {
                idmp_names.push(producer.clone());
                idmp_iids.push(iid.clone());
            }
            None => {}
        }
    }
    let mut envelopes: HashMap<String, (u64, u64)> = HashMap::new();
    if !envelope_names.is_empty() {
        for row in tx
            .cq(
                "SELECT producer, seq, last_id FROM producers WHERE producer = ANY($1)",
                &[&envelope_names],
            )
            .await
            .map_err(pg)?
        {
            envelopes.insert(row.get(0), (unbig(row.get(1)), unbig(row.get(2))));
        }
    }
    let mut idmp: HashMap<String, IdmpState> = HashMap::new();
    if !idmp_names.is_empty() {
        for row in tx
            .cq(
                "SELECT producer, coalesce(max(n), 0) FROM idmp WHERE producer = ANY($1) GROUP BY producer",
                &[&idmp_names],
            )
            .await
            .map_err(pg)?
        {
            idmp.entry(row.get(0)).or_default().newest = row.get(1);
        }
        for row in tx
            .cq(
                "SELECT producer, iid, first_id FROM idmp WHERE producer = ANY($1) AND iid = ANY($2)",
                &[&idmp_names, &idmp_iids],
            )
            .await
            .map_err(pg)?
        {
            let producer: String = row.get(0);
            idmp.entry(producer)
                .or_default()
                .ids
                .insert(row.get(1), unbig(row.get(2)));
        }
    }

    let (mut firsts, mut lasts, mut stamps, mut texts) = (vec![], vec![], vec![], vec![]);
    let mut new_iids: (Vec<String>, Vec<i64>, Vec<String>, Vec<i64>) = Default::default();
    let mut answers = Vec::with_capacity(frames.len());
    for frame in frames {
        if frame.events.is_empty() {
            answers.push(Err(StorageError::Failed(
                "an empty frame cannot be appended".into(),
            )));
            continue;
        }
        let earlier = match &frame.dedup {
            Some(Dedup::Envelope { producer, seq }) => envelopes
                .get(producer)
                .and_then(|(stored, last)| (*seq <= *stored).then_some(*last)),
            Some(Dedup::Idmp { producer, iid, .. }) => {
                idmp.get(producer).and_then(|p| p.ids.get(iid).copied())
            }
            None => None,
        };
        if let Some(id) = earlier {
            answers.push(Ok(Appended {
                first_id: id,
                last_id: id,
                count: 0,
                duplicate: true,
            }));
            continue;
        }
        let count = frame.events.len() as u64;
        let (first_id, last_id) = (next, next + count - 1);
        next = last_id + 1;
        firsts.push(big(first_id));
        lasts.push(big(last_id));
        stamps.push(ts_ms);
        texts.push(events_json(&frame.events));
        match frame.dedup {
            Some(Dedup::Envelope { producer, seq }) => {
                envelopes.insert(producer, (seq, last_id));
            }
            Some(Dedup::Idmp {
                producer,
                iid,
                keep,
            }) => {
                let p = idmp.entry(producer.clone()).or_default();
                p.newest += 1;
                p.keep = keep;
                p.touched = true;
                p.ids.insert(iid.clone(), first_id);
                new_iids.0.push(producer);
                new_iids.1.push(p.newest);
                new_iids.2.push(iid);
                new_iids.3.push(big(first_id));
            }
            None => {}
        }
        answers.push(Ok(Appended {
            first_id,
            last_id,
            count,
            duplicate: false,
        }));
    }
    if firsts.is_empty() {
        tx.commit().await.map_err(pg)?;
        return Ok(answers);
    }
    tx.cexec(
        "INSERT INTO frames (first_id, last_id, ts_ms, events) \
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])",
        &[&firsts, &lasts, &stamps, &texts],
    )
    .await
    .map_err(pg)?;
    if !envelope_names.is_empty() {
        let (names, seqs, ids): (Vec<&String>, Vec<i64>, Vec<i64>) = envelopes
            .iter()
            .map(|(name, (seq, last))| (name, big(*seq), big(*last)))
            .fold(Default::default(), |mut acc, (n, s, l)| {
                acc.0.push(n);
                acc.1.push(s);
                acc.2.push(l);
                acc
            });
        tx.cexec(
            "INSERT INTO producers (producer, seq, last_id) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (producer) DO UPDATE SET seq = EXCLUDED.seq, last_id = EXCLUDED.last_id",
            &[&names, &seqs, &ids],
        )
        .await
        .map_err(pg)?;
    }
    if !new_iids.0.is_empty() {
        tx.cexec(
            "INSERT INTO idmp (producer, n, iid, first_id) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])",
            &[&new_iids.0, &new_iids.1, &new_iids.2, &new_iids.3],
        )
        .await
        .map_err(pg)?;
        for (producer, p) in idmp.iter().filter(|(_, p)| p.touched) {
            let keep_from = p.newest - i64::try_from(p.keep).unwrap_or(i64::MAX);
            tx.cexec(
                "DELETE FROM idmp WHERE producer = $1 AND n <= $2",
                &[producer, &keep_from],
            )
            .await
            .map_err(pg)?;
        }
    }
    tx.cexec("UPDATE log_head SET next_id = $1", &[&big(next)])
        .await
        .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(answers)
}

#[async_trait]
impl EventLog for PgStorage {
    async fn submit(&self, frame: NewFrame) -> Result<PendingAppend, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.appends
            .send_async(AppendJob {
                frame,
                received: std::time::Instant::now(),
                reply,
            })
            .await
            .map_err(|_| StorageError::Unavailable("the appender has stopped".into()))?;
        Ok(PendingAppend(rx))
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.inner.client().await?;
        let rows = client
            .cq(
                "SELECT first_id, ts_ms, events FROM frames WHERE last_id > $1 \
                 ORDER BY first_id LIMIT $2",
                &[&big(after), &big(limit as u64)],
            )
            .await
            .map_err(pg);
        let rows = self.inner.watch(rows)?;
        let mut out = Vec::with_capacity(limit);
        for row in rows {
            let first = unbig(row.get(0));
            let ts_ms = unbig(row.get(1));
            let text: &str = row.get(2);
            let events: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| StorageError::Failed(format!("stored frame {first}: {e}")))?;
            for (i, event) in events.into_iter().enumerate() {
                let id = first + i as u64;
                if id <= after {
                    continue;
                }
                out.push(LoggedEvent {
                    id,
                    ts_ms,
                    json: event.get().to_string(),
                });
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    async fn cursor(&self, consumer: ConsumerName) -> Result<u64, StorageError> {
        let client = self.inner.client().await?;
        let row = client
            .cq_opt(
                "SELECT position FROM cursors WHERE name = $1",
                &[&consumer.as_str()],
            )
            .await
            .map_err(pg);
        Ok(self.inner.watch(row)?.map_or(0, |r| unbig(r.get(0))))
    }

    async fn drop_before(&self, upto: u64, before_ms: u64) -> Result<u64, StorageError> {
        let client = self.inner.client().await?;
        let rows = client
            .cq(
                "DELETE FROM frames WHERE first_id IN (\
                     SELECT first_id FROM frames WHERE last_id <= $1 AND ts_ms < $2 \
                     ORDER BY first_id LIMIT 10000) \
                 RETURNING last_id - first_id + 1",
                &[&big(upto), &big(before_ms)],
            )
            .await
            .map_err(pg);
        Ok(self
            .inner
            .watch(rows)?
            .iter()
            .map(|r| unbig(r.get(0)))
            .sum())
    }
}
