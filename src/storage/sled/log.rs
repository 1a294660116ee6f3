//! The event log's layout in the `log` tree, reading it, and the writer's
//! part of it: assigning ids and remembering idempotent producers.
//!
//! A frame is stored as one value keyed by its first id (`f` + id, big
//! endian), because one sled insert costs about as much as a whole small
//! frame. An envelope producer is `p` + name → (seq, last id); a Redis
//! `IDMP` producer's iids are `i` + name length + name + n → (iid, id),
//! `n` counting its iids, so the oldest are dropped first. Reading event `n` finds the frame whose key is the greatest at or
//! below `n`. Only the writer thread writes here ([`LogState`]); readers
//! read only up to the durable id it publishes after each flush.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::app::ports::{Appended, LoggedEvent, NewFrame, StorageError};
use crate::domain::event::Dedup;

fn db(e: ::sled::Error) -> StorageError {
    StorageError::Failed(e.to_string())
}

fn codec(e: postcard::Error) -> StorageError {
    StorageError::Failed(format!("stored frame: {e}"))
}

/// Key of the next id to assign.
pub const NEXT_ID_KEY: &[u8] = b"n";
const FRAME: u8 = b'f';
const PRODUCER: u8 = b'p';
const IDMP: u8 = b'i';

/// One ingested frame as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredFrame {
    /// Append time, Unix milliseconds.
    pub ts_ms: u64,
    /// Each event's JSON text, as sent.
    pub events: Vec<String>,
}

/// The key of the frame whose first event is `id`.
pub fn frame_key(id: u64) -> [u8; 9] {
    let mut key = [FRAME; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn frame_id(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// The key of a producer's dedup record.
pub fn producer_key(producer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(producer.len() + 1);
    key.push(PRODUCER);
    key.extend_from_slice(producer.as_bytes());
    key
}

/// Encodes a producer's highest seq and the last id of that envelope.
pub fn encode_producer(seq: u64, last_id: u64) -> [u8; 16] {
    let mut value = [0; 16];
    value[..8].copy_from_slice(&seq.to_be_bytes());
    value[8..].copy_from_slice(&last_id.to_be_bytes());
    value
}

/// The inverse of [`encode_producer`].
pub fn decode_producer(value: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let last = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((seq, last))
}

/// The prefix of an IDMP producer's iid keys.
fn idmp_prefix(producer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(producer.len() + 13);
    key.push(IDMP);
    key.extend_from_slice(&(producer.len() as u32).to_be_bytes());
    key.extend_from_slice(producer.as_bytes());
    key
}

/// The key of an IDMP producer's `n`th iid.
fn idmp_key(producer: &str, n: u64) -> Vec<u8> {
    let mut key = idmp_prefix(producer);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// One IDMP producer's remembered iids, oldest first.
#[derive(Default)]
struct IdmpProducer {
    next: u64,
    order: VecDeque<(u64, String)>,
    ids: HashMap<String, u64>,
}

impl IdmpProducer {
    fn load(tree: &::sled::Tree, producer: &str) -> Result<IdmpProducer, StorageError> {
        let prefix = idmp_prefix(producer);
        let mut p = IdmpProducer::default();
        for item in tree.scan_prefix(&prefix) {
            let (key, value) = item.map_err(db)?;
            let n = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StorageError::Failed("a damaged IDMP key".into()))?;
            let (iid, id): (String, u64) = postcard::from_bytes(&value).map_err(codec)?;
            p.ids.insert(iid.clone(), id);
            p.order.push_back((n, iid));
            p.next = n + 1;
        }
        Ok(p)
    }

    /// Remembers `iid` → `id`, forgetting the oldest beyond `keep`.
    fn record(
        &mut self,
        batch: &mut ::sled::Batch,
        producer: &str,
        iid: String,
        id: u64,
        keep: usize,
    ) -> Result<(), StorageError> {
        let n = self.next;
        self.next += 1;
        let value = postcard::to_stdvec(&(&iid, id)).map_err(codec)?;
        batch.insert(idmp_key(producer, n), value);
        self.ids.insert(iid.clone(), id);
        self.order.push_back((n, iid));
        while self.order.len() > keep.max(1) {
            if let Some((old, iid)) = self.order.pop_front() {
                batch.remove(idmp_key(producer, old));
                self.ids.remove(&iid);
            }
        }
        Ok(())
    }
}

/// Reads the next id to assign.
pub fn next_id(tree: &::sled::Tree) -> Result<u64, StorageError> {
    let stored = tree
        .get(NEXT_ID_KEY)
        .map_err(db)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(1);
    // The next id is written in the same batch as each frame; the last frame
    // is checked too so a damaged counter can never reuse an id.
    let after_last = match tree.scan_prefix([FRAME]).next_back() {
        Some(item) => {
            let (key, value) = item.map_err(db)?;
            let frame: StoredFrame = postcard::from_bytes(&value).map_err(codec)?;
            frame_id(&key).unwrap_or(0) + frame.events.len() as u64
        }
        None => 1,
    };
    Ok(stored.max(after_last).max(1))
}

/// Reads up to `limit` events with ids greater than `after`, ascending.
pub fn read(
    tree: &::sled::Tree,
    after: u64,
    limit: usize,
) -> Result<Vec<LoggedEvent>, StorageError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let want = after.saturating_add(1);
    // The frame holding `want` starts at or before it.
    let start = match tree.range(frame_key(0)..=frame_key(want)).next_back() {
        Some(item) => frame_key(frame_id(&item.map_err(db)?.0).unwrap_or(want)),
        None => frame_key(want),
    };
    for item in tree.range(start..frame_key(u64::MAX)) {
        let (key, value) = item.map_err(db)?;
        let first = frame_id(&key).unwrap_or(0);
        let frame: StoredFrame = postcard::from_bytes(&value).map_err(codec)?;
        for (i, json) in frame.events.into_iter().enumerate() {
            let id = first + i as u64;
            if id < want {
                continue;
            }
            out.push(LoggedEvent {
                id,
                ts_ms: frame.ts_ms,
                json,
            });
            if out.len() == limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Stages the removal of frames whose events are all at or below `upto`
/// and that were appended before `before_ms`, at most `max_frames` of
/// them. Returns the number of events dropped.
pub fn drop_before(
    tree: &::sled::Tree,
    batch: &mut ::sled::Batch,
    upto: u64,
    before_ms: u64,
    max_frames: usize,
) -> Result<u64, StorageError> {
    let mut dropped = 0;
    for item in tree
        .range(frame_key(0)..frame_key(u64::MAX))
        .take(max_frames)
    {
        let (key, value) = item.map_err(db)?;
        let first = frame_id(&key).unwrap_or(0);
        let frame: StoredFrame = postcard::from_bytes(&value).map_err(codec)?;
        let last = first + frame.events.len() as u64 - 1;
        if last > upto || frame.ts_ms >= before_ms {
            break;
        }
        batch.remove(key);
        dropped += frame.events.len() as u64;
    }
    Ok(dropped)
}

/// The writer's side of the log: the next id and the producers it knows.
pub struct LogState {
    next_id: u64,
    /// Producer -> (highest seq, last id of that envelope), read lazily.
    producers: HashMap<String, (u64, u64)>,
    /// IDMP producers' remembered iids, read lazily.
    idmp: HashMap<String, IdmpProducer>,
}

impl LogState {
    /// Reads the next id from the tree.
    pub fn load(tree: &::sled::Tree) -> Result<LogState, StorageError> {
        Ok(LogState {
            next_id: next_id(tree)?,
            producers: HashMap::new(),
            idmp: HashMap::new(),
        })
    }

    /// The id of the last event appended (durable or not).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Stages one frame (or recognises a duplicate envelope).
    pub fn stage(
        &mut self,
        tree: &::sled::Tree,
        batch: &mut ::sled::Batch,
        frame: NewFrame,
        ts_ms: u64,
    ) -> Result<Appended, StorageError> {
        if frame.events.is_empty() {
            return Err(StorageError::Failed(
                "an empty frame cannot be appended".into(),
            ));
        }
        let earlier = match &frame.dedup {
            Some(Dedup::Envelope { producer, seq }) => {
                let (stored_seq, stored_last) = self.producer(tree, producer)?;
                (*seq <= stored_seq).then_some(stored_last)
            }
            Some(Dedup::Idmp { producer, iid, .. }) => {
                self.idmp_producer(tree, producer)?.ids.get(iid).copied()
            }
            None => None,
        };
        if let Some(id) = earlier {
            return Ok(Appended {
                first_id: id,
                last_id: id,
                count: 0,
                duplicate: true,
            });
        }
        let count = frame.events.len() as u64;
        let first_id = self.next_id;
        let last_id = first_id + count - 1;
        let bytes = postcard::to_stdvec(&StoredFrame {
            ts_ms,
            events: frame.events,
        })
        .map_err(codec)?;
        batch.insert(&frame_key(first_id), bytes);
        self.next_id = last_id + 1;
        batch.insert(NEXT_ID_KEY, &self.next_id.to_be_bytes());
        match frame.dedup {
            Some(Dedup::Envelope { producer, seq }) => {
                batch.insert(producer_key(&producer), &encode_producer(seq, last_id));
                self.producers.insert(producer, (seq, last_id));
            }
            Some(Dedup::Idmp {
                producer,
                iid,
                keep,
            }) => {
                self.idmp_producer(tree, &producer)?
                    .record(batch, &producer, iid, first_id, keep)?;
            }
            None => {}
        }
        Ok(Appended {
            first_id,
            last_id,
            count,
            duplicate: false,
        })
    }

    /// An IDMP producer's iids (cached after the first read).
    fn idmp_producer(
        &mut self,
        tree: &::sled::Tree,
        name: &str,
    ) -> Result<&mut IdmpProducer, StorageError> {
        if !self.idmp.contains_key(name) {
            let loaded = IdmpProducer::load(tree, name)?;
            self.idmp.insert(name.to_string(), loaded);
        }
        self.idmp
            .get_mut(name)
            .ok_or_else(|| StorageError::Failed("IDMP producer vanished".into()))
    }

    /// A producer's highest seq and last id (cached after the first read).
    fn producer(&mut self, tree: &::sled::Tree, name: &str) -> Result<(u64, u64), StorageError> {
        if let Some(p) = self.producers.get(name) {
            return Ok(*p);
        }
        let stored = tree
            .get(producer_key(name))
            .map_err(db)?
            .and_then(|v| decode_producer(&v))
            .unwrap_or((0, 0));
        self.producers.insert(name.to_string(), stored);
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with_frames(frames: &[(u64, usize)]) -> ::sled::Tree {
        let db = ::sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("log").unwrap();
        for &(first, n) in frames {
            let frame = StoredFrame {
                ts_ms: first,
                events: (0..n)
                    .map(|i| format!("{{\"n\":{}}}", first + i as u64))
                    .collect(),
            };
            tree.insert(frame_key(first), postcard::to_stdvec(&frame).unwrap())
                .unwrap();
        }
        tree
    }

    #[test]
    fn reads_from_the_middle_of_a_frame() {
        let tree = tree_with_frames(&[(1, 3), (4, 1), (5, 5)]);
        let ids: Vec<u64> = read(&tree, 2, 100).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![3, 4, 5, 6, 7, 8, 9]);
        let page: Vec<u64> = read(&tree, 0, 4).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(page, vec![1, 2, 3, 4]);
        assert!(read(&tree, 9, 10).unwrap().is_empty());
        assert_eq!(read(&tree, 5, 1).unwrap()[0].json, "{\"n\":6}");
    }

    #[test]
    fn next_id_follows_the_last_frame() {
        let tree = tree_with_frames(&[(1, 3), (4, 2)]);
        assert_eq!(next_id(&tree).unwrap(), 6);
        let empty = tree_with_frames(&[]);
        assert_eq!(next_id(&empty).unwrap(), 1);
    }

    #[test]
    fn retention_keeps_unconsumed_and_recent_frames() {
        let tree = tree_with_frames(&[(1, 3), (4, 1), (5, 5)]);
        let mut batch = ::sled::Batch::default();
        assert_eq!(drop_before(&tree, &mut batch, 4, 1000, 100).unwrap(), 4);
        tree.apply_batch(batch).unwrap();
        let ids: Vec<u64> = read(&tree, 0, 100).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![5, 6, 7, 8, 9]);
        let tree = tree_with_frames(&[(1, 3), (4, 1)]);
        let mut batch = ::sled::Batch::default();
        assert_eq!(
            drop_before(&tree, &mut batch, 10, 2, 100).unwrap(),
            3,
            "frame 4 is too recent"
        );
    }

    #[test]
    fn producer_codec_round_trips() {
        assert_eq!(
            decode_producer(&encode_producer(17, 1042)),
            Some((17, 1042))
        );
        assert_eq!(decode_producer(b"short"), None);
    }
}
