//! Ingest (API.md "Event ingest"): validate a frame against the products a
//! key admits, append it through the event-log port, count what was
//! appended. The front ends (POST, WebSocket, later RESP) share this path.

use std::collections::HashMap;

use super::ports::{Appended, NewFrame, PendingAppend};
use super::{App, AppError};
use crate::domain::event::{Frame, FrameError, parse_frame, type_label};
use crate::infra::metrics;

/// (product, type) of each event of a frame, for the metrics.
pub type Kinds = Vec<(String, String)>;

impl App {
    /// Validates a frame; a rejection is counted by reason.
    pub fn validate_frame(&self, text: &str, admitted: &[String]) -> Result<Frame, FrameError> {
        let known = |p: &str| self.products.contains_key(p);
        let result = parse_frame(text, admitted, &known);
        if let Err(e) = &result {
            metrics::frame_rejected(e.code());
        }
        result
    }

    /// Queues a validated frame, waiting while the write queue is full; the
    /// returned append resolves once it is durable.
    pub async fn submit_frame(&self, frame: Frame) -> Result<(PendingAppend, Kinds), AppError> {
        let pending = self
            .storage
            .submit(NewFrame {
                events: frame.events,
                dedup: frame.dedup,
            })
            .await?;
        Ok((pending, frame.kinds))
    }

    /// Appends a validated frame and waits until it is durable.
    pub async fn append_frame(&self, frame: Frame) -> Result<Appended, AppError> {
        let (pending, kinds) = self.submit_frame(frame).await?;
        let appended = pending.wait().await?;
        count_ingested(&appended, &kinds);
        Ok(appended)
    }
}

/// Counts an appended frame's events by product and type.
pub fn count_ingested(appended: &Appended, kinds: &Kinds) {
    if appended.duplicate {
        return;
    }
    let mut counts: HashMap<(&str, &'static str), u64> = HashMap::new();
    for (product, kind) in kinds {
        *counts.entry((product, type_label(kind))).or_default() += 1;
    }
    for ((product, kind), n) in counts {
        metrics::events_ingested(product, kind, n);
    }
}
