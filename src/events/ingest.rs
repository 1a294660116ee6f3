//! Event ingest: `GET /ingest` (WebSocket), `POST /ingest`, and the frame
//! rules of API.md "Event ingest".
//!
//! A frame is validated whole before anything is appended, so a bad event
//! rejects its frame and nothing else. On a WebSocket the reader queues
//! frames to the committer without waiting, and a writer task answers them
//! in order as each becomes durable: clients may pipeline.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::server::AppState;
use crate::store::{Appended, StoreError};

/// Largest frame or body accepted.
pub const MAX_FRAME: usize = 1 << 20;

/// A validated frame, ready to append.
#[derive(Debug)]
pub struct Frame {
    /// Each event's JSON text.
    pub events: Vec<String>,
    pub producer: Option<(String, u64)>,
    /// (product, type) of each event, for the metrics.
    pub kinds: Vec<(String, String)>,
}

/// Why a frame is rejected.
#[derive(Debug, Clone, PartialEq)]
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

    fn code(&self) -> &'static str {
        if self.forbidden {
            "forbidden"
        } else {
            "bad_request"
        }
    }

    fn to_json(&self) -> Value {
        let mut body = json!({"error": self.code(), "message": self.message});
        if let Some(index) = self.index {
            body["index"] = json!(index);
        }
        body
    }
}

impl From<FrameError> for ApiError {
    fn from(e: FrameError) -> Self {
        if e.forbidden {
            ApiError::Forbidden(e.message)
        } else {
            ApiError::BadRequest {
                message: e.message,
                index: e.index,
            }
        }
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

fn envelope<'a>(map: &Fields<'a>) -> Result<((String, u64), Vec<&'a RawValue>), FrameError> {
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
        Some(events) => Ok(((producer, seq), events)),
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
    let (producer, events): (_, Vec<&str>) = if text.starts_with('[') {
        let events: Vec<&RawValue> = serde_json::from_str(text).map_err(not_json)?;
        (None, events.into_iter().map(RawValue::get).collect())
    } else if is_object(text) {
        let map: Fields = serde_json::from_str(text).map_err(not_json)?;
        if map.events.is_none() {
            let kind = check_fields(&map, 0, admitted, known)?;
            return Ok(Frame {
                events: vec![text.to_string()],
                producer: None,
                kinds: vec![kind],
            });
        }
        let (producer, events) = envelope(&map)?;
        (
            Some(producer),
            events.into_iter().map(RawValue::get).collect(),
        )
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
        producer,
        kinds,
    })
}

fn count_ingested(kinds: &[(String, String)]) {
    let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
    for (product, kind) in kinds {
        *counts.entry((product, kind)).or_default() += 1;
    }
    for ((product, kind), n) in counts {
        crate::metrics::events_ingested(product, kind, n);
    }
}

fn ack_json(appended: &Appended) -> Value {
    let mut ack = json!({"ack": appended.last_id, "count": appended.count});
    if appended.duplicate {
        ack["duplicate"] = json!(true);
    }
    ack
}

fn admitted(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    app.ingest_keys
        .admit(headers, query.get("key").map(String::as_str))
}

fn validate(app: &AppState, text: &str, admitted: &[String]) -> Result<Frame, FrameError> {
    let known = |p: &str| app.products.contains_key(p);
    let result = parse_frame(text, admitted, &known);
    if let Err(e) = &result {
        crate::metrics::frame_rejected(e.code());
    }
    result
}

/// `POST /ingest`.
pub async fn post(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let admitted = admitted(&app, &headers, &query)?;
    let body = body?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let frame = validate(&app, text, &admitted)?;
    let appended = app.store.append(frame.events, frame.producer).await?;
    if !appended.duplicate {
        count_ingested(&frame.kinds);
    }
    let mut answer = json!({
        "first_id": appended.first_id,
        "last_id": appended.last_id,
        "count": appended.count,
    });
    if appended.duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok(Json(answer))
}

/// `GET /ingest`: the WebSocket upgrade, refused with 401 without a key.
pub async fn websocket(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let admitted = match admitted(&app, &headers, &query) {
        Ok(products) => products,
        Err(e) => return e.into_response(),
    };
    upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| serve_socket(app, socket, admitted))
}

/// What the writer sends next, in frame order.
enum Answer {
    Now(Value),
    Durable(
        oneshot::Receiver<Result<Appended, StoreError>>,
        Vec<(String, String)>,
    ),
    Close(u16, &'static str),
}

async fn serve_socket(app: AppState, socket: WebSocket, admitted: Vec<String>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Answer>(4096);
    let writer = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let message = match answer {
                Answer::Now(value) => Message::Text(value.to_string().into()),
                Answer::Durable(pending, kinds) => match pending.await {
                    Ok(Ok(appended)) => {
                        if !appended.duplicate {
                            count_ingested(&kinds);
                        }
                        Message::Text(ack_json(&appended).to_string().into())
                    }
                    _ => Message::Text(
                        json!({"error": "internal", "message": "the append failed"})
                            .to_string()
                            .into(),
                    ),
                },
                Answer::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(message) = stream.next().await {
        let answer = match message {
            Ok(Message::Text(text)) => match validate(&app, text.as_str(), &admitted) {
                Ok(frame) => match app.store.submit(frame.events, frame.producer) {
                    Ok(pending) => Answer::Durable(pending, frame.kinds),
                    Err(_) => Answer::Close(close_code::ERROR, "the store has stopped"),
                },
                Err(e) => Answer::Now(e.to_json()),
            },
            Ok(Message::Binary(_)) => {
                crate::metrics::frame_rejected("binary");
                Answer::Close(close_code::UNSUPPORTED, "binary frames are not accepted")
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                let too_big = e.to_string().to_lowercase().contains("too long")
                    || e.to_string().to_lowercase().contains("size");
                if too_big {
                    crate::metrics::frame_rejected("too_large");
                    Answer::Close(close_code::SIZE, "frame larger than 1 MiB")
                } else {
                    break;
                }
            }
        };
        let closing = matches!(answer, Answer::Close(..));
        if tx.send(answer).await.is_err() || closing {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
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
        assert_eq!(frame.producer, Some(("p".into(), 3)));
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
}
