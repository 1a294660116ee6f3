//! Player stats handlers: turn events into per-player counter increments.
//!
//! A product's config names its handler (`stats = "exrps"`). Handlers are
//! pure: they read an event and say which counters move; the consumer
//! stores them. To add one, write a type implementing [`StatsHandler`] and
//! add one line to [`REGISTRY`].

use super::Registry;

use serde_json::Value;

use super::event::text;

/// One counter change: (user id, counter name, amount).
pub type Increment = (String, &'static str, i64);

/// Why a handler could not read an event.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// Turns events into counter increments.
pub trait StatsHandler: Send + Sync {
    /// The increments `event` causes (none for events it does not track).
    fn handle(&self, event: &Value) -> Result<Vec<Increment>, Unreadable>;
}

fn field(event: &Value, name: &str) -> Result<String, Unreadable> {
    text(event.get(name)).ok_or_else(|| Unreadable(format!("missing or invalid `{name}`")))
}

/// `games`, `wins` and `losses` from `game_over` (always all three).
pub struct Default;

impl StatsHandler for Default {
    fn handle(&self, event: &Value) -> Result<Vec<Increment>, Unreadable> {
        if event.get("type").and_then(Value::as_str) != Some("game_over") {
            return Ok(Vec::new());
        }
        let winner = field(event, "winner_id")?;
        let loser = field(event, "loser_id")?;
        if winner == loser {
            return Err(Unreadable("winner_id and loser_id are the same".into()));
        }
        Ok(vec![
            (winner.clone(), "games", 1),
            (winner.clone(), "wins", 1),
            (winner, "losses", 0),
            (loser.clone(), "games", 1),
            (loser.clone(), "wins", 0),
            (loser, "losses", 1),
        ])
    }
}

/// [`Default`] plus `<weapon>_selection_count` from `select_weapon` gameplay.
pub struct Exrps;

impl StatsHandler for Exrps {
    fn handle(&self, event: &Value) -> Result<Vec<Increment>, Unreadable> {
        let is_gameplay = event.get("type").and_then(Value::as_str) == Some("gameplay");
        if !is_gameplay {
            return Default.handle(event);
        }
        if text(event.get("event_name")).as_deref() != Some("select_weapon") {
            return Ok(Vec::new());
        }
        let user = field(event, "user_id")?;
        let counter = match event.get("event_data") {
            None | Some(Value::Null) => "botch_selection_count",
            Some(data) => match text(Some(data)).as_deref() {
                Some("0") => "rock_selection_count",
                Some("1") => "paper_selection_count",
                Some("2") => "scissors_selection_count",
                Some("null") => "botch_selection_count",
                _ => return Err(Unreadable(format!("unknown weapon {data}"))),
            },
        };
        Ok(vec![(user, counter, 1)])
    }
}

/// Every handler by name: one line each.
pub const REGISTRY: Registry<dyn StatsHandler> = Registry(&[
    ("default", || Box::new(Default)),
    ("exrps", || Box::new(Exrps)),
]);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registered_names() {
        assert_eq!(REGISTRY.names(), ["default", "exrps"]);
    }

    #[test]
    fn default_counts_games_wins_losses() {
        let event = json!({"type": "game_over", "winner_id": "1", "loser_id": 2});
        let inc = Default.handle(&event).unwrap();
        assert!(inc.contains(&("1".into(), "wins", 1)));
        assert!(inc.contains(&("2".into(), "losses", 1)));
        assert!(inc.contains(&("2".into(), "wins", 0)));
        assert!(
            Default
                .handle(&json!({"type": "game_over", "winner_id": "1"}))
                .is_err()
        );
        assert!(
            Default
                .handle(&json!({"type": "gameplay"}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn exrps_counts_weapons() {
        let pick = |data: Value| {
            let mut e = json!({"type": "gameplay", "event_name": "select_weapon", "user_id": "7"});
            e["event_data"] = data;
            Exrps.handle(&e)
        };
        assert_eq!(
            pick(json!("0")).unwrap(),
            vec![("7".into(), "rock_selection_count", 1)]
        );
        assert_eq!(pick(json!("1")).unwrap()[0].1, "paper_selection_count");
        assert_eq!(pick(json!(2)).unwrap()[0].1, "scissors_selection_count");
        assert_eq!(pick(json!("null")).unwrap()[0].1, "botch_selection_count");
        assert!(pick(json!("9")).is_err());
        let other = json!({"type": "gameplay", "event_name": "chat", "user_id": "7"});
        assert!(Exrps.handle(&other).unwrap().is_empty());
        let anon = json!({"type": "gameplay", "event_name": "select_weapon", "event_data": "0"});
        assert!(Exrps.handle(&anon).is_err());
        let over = json!({"type": "game_over", "winner_id": "1", "loser_id": "2"});
        assert_eq!(Exrps.handle(&over).unwrap().len(), 6);
    }
}
