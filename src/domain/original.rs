//! The original Python services' records (API.md "Import from the
//! original"), read into ours: a game's JSON and its `_last_updated` clock,
//! stream entry ids, and stream field/value pairs as an event object (also
//! what a Redis-protocol `XADD` becomes). Pure conversions; reading Redis
//! is elsewhere.

use std::cmp::Ordering;

use serde_json::Value;

use super::game::{Game, State};

/// Parses the original's `_last_updated` (`22-Nov-2026 (08:31:08.123456)`,
/// UTC) into µs since the epoch.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let format = time::macros::format_description!(
        "[day]-[month repr:short]-[year] ([hour]:[minute]:[second].[subsecond])"
    );
    let t = time::PrimitiveDateTime::parse(text.trim(), format).ok()?;
    u64::try_from(t.assume_utc().unix_timestamp_nanos() / 1000).ok()
}

/// A Redis stream entry id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(pub u64, pub u64);

impl EntryId {
    /// Parses `<ms>-<seq>` or `<ms>`.
    pub fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Some(EntryId(ms.parse().ok()?, seq.parse().ok()?))
    }

    /// Compares with an optional index (a missing index is before all).
    pub fn after(self, index: Option<EntryId>) -> bool {
        index.is_none_or(|i| self.cmp(&i) == Ordering::Greater)
    }
}

/// Field/value pairs as one JSON object with string values, in the order
/// given; a repeated field keeps its first place and its last value.
pub fn event_object(pairs: &[(String, String)]) -> String {
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
    for (field, value) in pairs {
        match fields.iter_mut().find(|(f, _)| *f == field.as_str()) {
            Some(existing) => existing.1 = value,
            None => fields.push((field, value)),
        }
    }
    let mut out = String::with_capacity(
        2 + fields
            .iter()
            .map(|(f, v)| f.len() + v.len() + 6)
            .sum::<usize>(),
    );
    out.push('{');
    for (i, (field, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, field);
        out.push(':');
        push_json_string(&mut out, value);
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// An id the original stored as a string or a number.
fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one game of `product` from the original's full-form JSON. The
/// game keeps its state, players, token, settings and state clock;
/// `listing` is its place in the lobby order, `target` the product's game
/// socket for a record without one.
pub fn parse_game(
    product: &str,
    json: &str,
    listing: Option<u64>,
    target: &str,
) -> Result<Game, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let text = |name: &str| {
        id_text(v.get(name)).ok_or_else(|| format!("`{name}` is missing or not a string"))
    };
    let game_id = text("game_id")?;
    if let Some(p) = id_text(v.get("product_id"))
        && p != product
    {
        return Err(format!("`product_id` is {p:?}, not {product:?}"));
    }
    let state_name = text("state")?;
    let state = State::parse(&state_name).ok_or_else(|| format!("unknown state {state_name:?}"))?;
    let players = match v.get("players") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| id_text(Some(p)).ok_or("`players` holds a non-id"))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("`players` is missing or not an array".into()),
    };
    let settings = match v.get("settings") {
        Some(s @ Value::Object(_)) => s.clone(),
        None | Some(Value::Null) => serde_json::json!({}),
        Some(_) => return Err("`settings` is not an object".into()),
    };
    let num_players = match settings.get("num_players") {
        None => 2,
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=1000).contains(n))
            .ok_or("`settings.num_players` is not an integer from 1 to 1000")?,
    };
    let clock = text("_last_updated")?;
    let since_us = parse_timestamp(&clock)
        .ok_or_else(|| format!("`_last_updated` {clock:?} is not a time"))?;
    Ok(Game {
        game_id,
        product_id: product.to_string(),
        game_server_url: text("game_server_url")?,
        creator_id: text("creator_id")?,
        creator_name: id_text(v.get("creator_name")).unwrap_or_default(),
        players,
        settings: settings.to_string(),
        num_players,
        token: id_text(v.get("token")).unwrap_or_default(),
        state,
        state_since_us: since_us,
        last_updated_us: since_us,
        listing,
        target_game_server: id_text(v.get("target_game_server"))
            .unwrap_or_else(|| target.to_string()),
        curation_failures: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::game::format_timestamp;

    #[test]
    fn timestamps_round_trip_with_the_original_format() {
        let us = parse_timestamp("22-Nov-2026 (08:31:08.123456)").unwrap();
        assert_eq!(format_timestamp(us), "22-Nov-2026 (08:31:08.123456)");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn entry_ids_order_as_redis_does() {
        let a = EntryId::parse("1700000000000-1").unwrap();
        let b = EntryId::parse("1700000000000-10").unwrap();
        assert!(b > a);
        assert!(a.after(None));
        assert!(!a.after(Some(a)));
        assert!(b.after(Some(a)));
        assert_eq!(EntryId::parse("5"), Some(EntryId(5, 0)));
        assert_eq!(EntryId::parse("x-1"), None);
    }

    #[test]
    fn pairs_become_an_object_in_order() {
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            event_object(&pairs(&[("type", "gameplay"), ("n", "say \"hi\"")])),
            r#"{"type":"gameplay","n":"say \"hi\""}"#
        );
        assert_eq!(
            event_object(&pairs(&[("a", "1"), ("b", "2"), ("a", "3")])),
            r#"{"a":"3","b":"2"}"#
        );
    }

    #[test]
    fn a_game_from_the_original() {
        let json = r#"{"game_id": "g1", "product_id": "exrps",
            "game_server_url": "http://127.0.0.1:8080", "creator_id": 17,
            "creator_name": "alice", "players": ["17", 23],
            "settings": {"num_players": 3}, "token": "t", "state": "creator_joined",
            "_last_updated": "22-Nov-2026 (08:31:08.123456)",
            "target_game_server": "127.0.0.1:8085"}"#;
        let game = parse_game("exrps", json, Some(4), "x").unwrap();
        assert_eq!(game.creator_id, "17");
        assert_eq!(game.players, ["17", "23"]);
        assert_eq!((game.num_players, game.listing), (3, Some(4)));
        assert_eq!(game.state, State::CreatorJoined);
        assert_eq!(
            format_timestamp(game.state_since_us),
            "22-Nov-2026 (08:31:08.123456)"
        );
        assert!(
            parse_game("chess", json, None, "x")
                .unwrap_err()
                .contains("product_id")
        );
        assert!(
            parse_game("exrps", "{not json", None, "x")
                .unwrap_err()
                .contains("JSON")
        );
        let bad_state = json.replace("creator_joined", "paused");
        assert!(
            parse_game("exrps", &bad_state, None, "x")
                .unwrap_err()
                .contains("paused")
        );
    }
}
