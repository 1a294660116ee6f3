//! Events: the frame rules of API.md "Event ingest" (one event, a batch or
//! an idempotent envelope; required fields per type; product scoping) and
//! what the consumers read from a logged event.
//!
//! A frame is validated whole before anything is appended, so a bad event
//! rejects its frame and nothing else. Each event keeps the exact text that
//! was sent; validation borrows from it in one parsing pass.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::game::{GameEvent, State};

/// Largest frame or body accepted.
pub const MAX_FRAME: usize = 1 << 20;

/// How a frame is protected against being appended twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedup {
    /// An envelope: appended only if `seq` is above the producer's highest.
    Envelope { producer: String, seq: u64 },
    /// A Redis `IDMP`: appended only if the producer has not used `iid`
    /// among its last `keep` iids.
    Idmp {
        producer: String,
        iid: String,
        keep: usize,
    },
}

/// A validated frame, ready to append.
#[derive(Debug)]
pub struct Frame {
    /// Each event's JSON text.
    pub events: Vec<String>,
    pub dedup: Option<Dedup>,
    /// (product, type) of each event, for the metrics.
    pub kinds: Vec<(String, String)>,
}

/// Why a frame is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    pub forbidden: bool,
    pub message: String,
    pub index: Option<usize>,
}

impl FrameError {
    fn bad(message: impl Into<String>, index: Option<usize>) -> Self {
        FrameError {
            forbidden: false,
            message: message.into(),
            index,
        }
    }

    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        if self.forbidden {
            "forbidden"
        } else {
            "bad_request"
        }
    }

    /// The error frame of a WebSocket.
    pub fn to_json(&self) -> Value {
        let mut body = json!({"error": self.code(), "message": self.message});
        if let Some(index) = self.index {
            body["index"] = json!(index);
        }
        body
    }
}

/// Fields each event type must carry besides `product_id`, `game_id`, `type`.
fn required_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "state_change" => &["new_state"],
        "game_over" => &["winner_id", "loser_id"],
        "player_disconnect" => &["player_id"],
        "gameplay" => &["event_name"],
        _ => &[],
    }
}

/// A field value as text: JSON strings and numbers only.
pub fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The fields ingest looks at, borrowed from the frame's text: one parsing
/// pass validates an event and keeps every value's text as sent.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    product_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    game_id: Option<&'a RawValue>,
    #[serde(borrow)]
    new_state: Option<&'a RawValue>,
    #[serde(borrow)]
    winner_id: Option<&'a RawValue>,
    #[serde(borrow)]
    loser_id: Option<&'a RawValue>,
    #[serde(borrow)]
    player_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event_name: Option<&'a RawValue>,
    #[serde(borrow)]
    producer: Option<&'a RawValue>,
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
    #[serde(borrow)]
    events: Option<&'a RawValue>,
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&RawValue> {
        match name {
            "new_state" => self.new_state,
            "winner_id" => self.winner_id,
            "loser_id" => self.loser_id,
            "player_id" => self.player_id,
            "event_name" => self.event_name,
            "game_id" => self.game_id,
            _ => None,
        }
    }
}

/// A raw JSON string or number as text (strings unescaped).
fn raw_text(raw: Option<&RawValue>) -> Option<String> {
    let text = raw?.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str(text).ok(),
        b'-' | b'0'..=b'9' => Some(text.to_string()),
        _ => None,
    }
}

fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Parses one object's fields; `None` when it is not an object.
fn fields(text: &str) -> Result<Option<Fields<'_>>, serde_json::Error> {
    if !is_object(text) {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some)
}

fn check_event(
    event: &str,
    index: usize,
    admitted: &[String],
    known: &dyn Fn(&str) -> bool,
) -> Result<(String, String), FrameError> {
    let bad = |m: String| FrameError::bad(m, Some(index));
    match fields(event) {
        Ok(Some(map)) => check_fields(&map, index, admitted, known),
        Ok(None) => Err(bad("an event must be a JSON object".into())),
        Err(e) => Err(bad(format!("invalid event: {e}"))),
    }
}

fn check_fields(
    map: &Fields,
    index: usize,
    admitted: &[String],
    known: &dyn Fn(&str) -> bool,
) -> Result<(String, String), FrameError> {
    let bad = |m: String| FrameError::bad(m, Some(index));
    let field = |name: &str, raw: Option<&RawValue>| -> Result<String, FrameError> {
        raw_text(raw).ok_or_else(|| bad(format!("missing or invalid field `{name}`")))
    };
    let product = field("product_id", map.product_id)?;
    let kind = field("type", map.kind)?;
    if !known(&product) {
        return Err(bad(format!("unknown product {product:?}")));
    }
    if !admitted.contains(&product) {
        return Err(FrameError {
            forbidden: true,
            message: format!("this ingest key does not admit events of {product:?}"),
            index: Some(index),
        });
    }
    field("game_id", map.game_id)?;
    for name in required_fields(&kind) {
        field(name, map.get(name))?;
    }
    Ok((product, kind))
}

fn envelope<'a>(map: &Fields<'a>) -> Result<(Dedup, Vec<&'a RawValue>), FrameError> {
    let producer = match raw_text(map.producer) {
        Some(p) if !p.is_empty() && map.producer.is_some_and(|r| r.get().starts_with('"')) => p,
        _ => {
            return Err(FrameError::bad(
                "`producer` must be a non-empty string",
                None,
            ));
        }
    };
    let seq = match map
        .seq
        .and_then(|r| serde_json::from_str::<u64>(r.get()).ok())
    {
        Some(seq) if seq > 0 => seq,
        _ => return Err(FrameError::bad("`seq` must be a positive integer", None)),
    };
    let events = map
        .events
        .filter(|r| r.get().starts_with('['))
        .and_then(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()).ok());
    match events {
        Some(events) => Ok((Dedup::Envelope { producer, seq }, events)),
        None => Err(FrameError::bad("`events` must be an array", None)),
    }
}

fn not_json(e: serde_json::Error) -> FrameError {
    FrameError::bad(format!("not JSON: {e}"), None)
}

/// Validates a frame: one event, an array of events, or an envelope. Each
/// event is kept as the exact text that was sent.
pub fn parse_frame(
    text: &str,
    admitted: &[String],
    known: &dyn Fn(&str) -> bool,
) -> Result<Frame, FrameError> {
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    let (dedup, events): (_, Vec<&str>) = if text.starts_with('[') {
        let events: Vec<&RawValue> = serde_json::from_str(text).map_err(not_json)?;
        (None, events.into_iter().map(RawValue::get).collect())
    } else if is_object(text) {
        let map: Fields = serde_json::from_str(text).map_err(not_json)?;
        if map.events.is_none() {
            let kind = check_fields(&map, 0, admitted, known)?;
            return Ok(Frame {
                events: vec![text.to_string()],
                dedup: None,
                kinds: vec![kind],
            });
        }
        let (dedup, events) = envelope(&map)?;
        (Some(dedup), events.into_iter().map(RawValue::get).collect())
    } else {
        serde_json::from_str::<&RawValue>(text).map_err(not_json)?;
        (None, vec![text])
    };
    if events.is_empty() {
        return Err(FrameError::bad(
            "a frame must hold at least one event",
            None,
        ));
    }
    let mut kinds = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        kinds.push(check_event(event, i, admitted, known)?);
    }
    Ok(Frame {
        events: events.into_iter().map(str::to_string).collect(),
        dedup,
        kinds,
    })
}

/// The event types the contract names; any other is `other` in metrics.
pub const KNOWN_TYPES: [&str; 5] = [
    "state_change",
    "game_over",
    "game_removed",
    "player_disconnect",
    "gameplay",
];

/// An event type as a metric label: one of [`KNOWN_TYPES`] or `other`.
pub fn type_label(kind: &str) -> &'static str {
    KNOWN_TYPES
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

/// What the matchmaker reads from a logged event.
#[derive(Debug, Clone, PartialEq)]
pub enum ForMatchmaker {
    /// An event for the game `game_id` of `product_id`.
    Game {
        game_id: String,
        product_id: String,
        event: GameEvent,
    },
    /// Not a matchmaker event.
    Skip,
    /// A matchmaker event that cannot be read.
    Unreadable,
}

#[derive(Deserialize)]
struct MatchmakerFields {
    #[serde(rename = "type")]
    kind: Value,
    product_id: Option<Value>,
    game_id: Option<Value>,
    new_state: Option<Value>,
    player_id: Option<Value>,
}

/// Reads a logged event's JSON text for the matchmaker.
pub fn for_matchmaker(json: &str) -> ForMatchmaker {
    let Ok(e) = serde_json::from_str::<MatchmakerFields>(json) else {
        return ForMatchmaker::Unreadable;
    };
    let event = match text(Some(&e.kind)).as_deref() {
        Some("state_change") => {
            GameEvent::Move(text(e.new_state.as_ref()).as_deref().and_then(State::parse))
        }
        Some("game_removed") => GameEvent::Remove,
        Some("player_disconnect") => match text(e.player_id.as_ref()) {
            Some(player) => GameEvent::Disconnect(player),
            None => return ForMatchmaker::Unreadable,
        },
        _ => return ForMatchmaker::Skip,
    };
    match (text(e.game_id.as_ref()), text(e.product_id.as_ref())) {
        (Some(game_id), Some(product_id)) => ForMatchmaker::Game {
            game_id,
            product_id,
            event,
        },
        _ => ForMatchmaker::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Frame, FrameError> {
        let known = |p: &str| p == "exrps" || p == "chess";
        parse_frame(text, &["exrps".to_string()], &known)
    }

    #[test]
    fn single_batch_and_envelope() {
        let one = r#"{"product_id":"exrps","game_id":"g","type":"game_removed"}"#;
        assert_eq!(parse(one).unwrap().events.len(), 1);
        let batch = format!("[{one},{one}]");
        assert_eq!(parse(&batch).unwrap().events.len(), 2);
        let env = format!(r#"{{"producer":"p","seq":3,"events":[{one}]}}"#);
        let frame = parse(&env).unwrap();
        assert_eq!(
            frame.dedup,
            Some(Dedup::Envelope {
                producer: "p".into(),
                seq: 3
            })
        );
        assert_eq!(frame.kinds, vec![("exrps".into(), "game_removed".into())]);
    }

    #[test]
    fn bad_frames_name_the_event() {
        assert_eq!(parse("nope").unwrap_err().index, None);
        assert_eq!(parse("[]").unwrap_err().index, None);
        let missing = r#"[{"product_id":"exrps","game_id":"g","type":"game_removed"},
                          {"product_id":"exrps","game_id":"g","type":"state_change"}]"#;
        let e = parse(missing).unwrap_err();
        assert_eq!((e.index, e.forbidden), (Some(1), false));
        assert!(e.message.contains("new_state"));
        let unknown = r#"{"product_id":"nope","game_id":"g","type":"x"}"#;
        assert_eq!(parse(unknown).unwrap_err().index, Some(0));
        let other = r#"{"product_id":"chess","game_id":"g","type":"x"}"#;
        assert!(parse(other).unwrap_err().forbidden);
        let no_type = r#"{"product_id":"exrps","game_id":"g"}"#;
        assert!(parse(no_type).is_err());
        let null_field = r#"{"product_id":"exrps","game_id":"g","type":"game_over","winner_id":null,"loser_id":"2"}"#;
        assert!(parse(null_field).is_err());
        assert!(parse(r#"{"producer":"p","seq":0,"events":[]}"#).is_err());
        assert!(parse("42").is_err());
    }

    #[test]
    fn matchmaker_reads_its_events() {
        let moved = for_matchmaker(
            r#"{"product_id":"p","game_id":"g","type":"state_change","new_state":"in_progress"}"#,
        );
        assert_eq!(
            moved,
            ForMatchmaker::Game {
                game_id: "g".into(),
                product_id: "p".into(),
                event: GameEvent::Move(Some(State::InProgress)),
            }
        );
        let unknown = for_matchmaker(
            r#"{"product_id":"p","game_id":"g","type":"state_change","new_state":"paused"}"#,
        );
        assert!(matches!(
            unknown,
            ForMatchmaker::Game {
                event: GameEvent::Move(None),
                ..
            }
        ));
        let left = for_matchmaker(
            r#"{"product_id":"p","game_id":1,"type":"player_disconnect","player_id":23}"#,
        );
        assert!(
            matches!(left, ForMatchmaker::Game { event: GameEvent::Disconnect(ref p), .. } if p == "23")
        );
        assert_eq!(
            for_matchmaker(r#"{"product_id":"p","game_id":"g","type":"game_over"}"#),
            ForMatchmaker::Skip
        );
        assert_eq!(
            for_matchmaker(r#"{"product_id":"p","type":"game_removed"}"#),
            ForMatchmaker::Unreadable
        );
        assert_eq!(for_matchmaker("not json"), ForMatchmaker::Unreadable);
    }

    #[test]
    fn type_labels_are_a_closed_set() {
        assert_eq!(type_label("game_over"), "game_over");
        assert_eq!(type_label("t4999"), "other");
    }
}
