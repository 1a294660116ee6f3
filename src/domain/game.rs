//! The game domain: the record the matchmaker keeps, the state machine, the
//! seat rules, what a logged event does to a game, and what curation does
//! to an expired one. Plain types and functions with no I/O; every time is
//! passed in.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a game is in its life (API.md "Game object").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    Created,
    CreatorJoined,
    AllPlayersJoined,
    InProgress,
    Ended,
}

impl State {
    /// Every state, in life order.
    pub const ALL: [State; 5] = [
        State::Created,
        State::CreatorJoined,
        State::AllPlayersJoined,
        State::InProgress,
        State::Ended,
    ];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::CreatorJoined => "creator_joined",
            State::AllPlayersJoined => "all_players_joined",
            State::InProgress => "in_progress",
            State::Ended => "ended",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// A one-byte code used in store keys.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether a game server may move a game from `self` to `to`: only to
    /// the next state, as in the original (no skipping, no going back).
    pub fn can_move_to(self, to: State) -> bool {
        State::ALL.get(self as usize + 1) == Some(&to)
    }
}

/// The matchmaker's record of one game (stored with postcard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Game {
    pub game_id: String,
    pub product_id: String,
    pub game_server_url: String,
    pub creator_id: String,
    pub creator_name: String,
    pub players: Vec<String>,
    /// The settings as JSON text (postcard cannot carry a free-form value).
    pub settings: String,
    pub num_players: u32,
    pub token: String,
    pub state: State,
    /// When the state last changed or was restarted (µs since the epoch);
    /// curation measures expiry from here.
    pub state_since_us: u64,
    /// When the record last changed (µs since the epoch).
    pub last_updated_us: u64,
    /// The game's place in the lobby order once it has been listed.
    pub listing: Option<u64>,
    pub target_game_server: String,
    /// Failed game-server calls made by curation for this game.
    pub curation_failures: u32,
}

/// Why a join is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    AlreadyJoined,
    NotJoinable,
}

impl Game {
    /// Whether every seat is taken.
    pub fn is_full(&self) -> bool {
        self.players.len() >= self.num_players as usize
    }

    /// Whether the lobby lists the game.
    pub fn is_listed(&self) -> bool {
        self.state == State::CreatorJoined && !self.is_full() && self.listing.is_some()
    }

    /// Takes a seat for `user_id`, or says why not.
    pub fn join(&mut self, user_id: &str, now_us: u64) -> Result<(), JoinRefusal> {
        if self.players.iter().any(|p| p == user_id) {
            return Err(JoinRefusal::AlreadyJoined);
        }
        if self.state != State::CreatorJoined || self.is_full() {
            return Err(JoinRefusal::NotJoinable);
        }
        self.players.push(user_id.to_string());
        self.state_since_us = now_us;
        self.last_updated_us = now_us;
        Ok(())
    }

    /// Gives back a seat taken by [`Game::join`]; false if it was not held.
    pub fn leave(&mut self, user_id: &str, now_us: u64) -> bool {
        if user_id == self.creator_id {
            return false;
        }
        let before = self.players.len();
        self.players.retain(|p| p != user_id);
        if self.players.len() == before {
            return false;
        }
        self.last_updated_us = now_us;
        true
    }

    /// Applies a reported state change; false when the machine forbids it.
    /// Reaching `creator_joined` gives the game its lobby place `listing`.
    pub fn move_to(&mut self, to: State, listing: u64, now_us: u64) -> bool {
        if !self.state.can_move_to(to) {
            return false;
        }
        self.state = to;
        self.state_since_us = now_us;
        self.last_updated_us = now_us;
        if to == State::CreatorJoined && self.listing.is_none() {
            self.listing = Some(listing);
        }
        true
    }

    /// A non-creator player left: back to `creator_joined` without them,
    /// listed again at `listing` (the back of the lobby, as the original
    /// did).
    pub fn disconnect(&mut self, player_id: &str, listing: u64, now_us: u64) -> bool {
        let live = matches!(
            self.state,
            State::CreatorJoined | State::AllPlayersJoined | State::InProgress
        );
        if !live || !self.leave(player_id, now_us) {
            return false;
        }
        self.state = State::CreatorJoined;
        self.state_since_us = now_us;
        self.listing = Some(listing);
        true
    }

    /// Curation of a full `creator_joined` game: drops the last player and
    /// restarts the clock. Returns the removed player.
    pub fn reset_last_seat(&mut self, now_us: u64) -> Option<String> {
        if self.state != State::CreatorJoined || self.players.len() < 2 {
            return None;
        }
        let removed = self.players.pop();
        self.state_since_us = now_us;
        self.last_updated_us = now_us;
        removed
    }

    /// The listing form's fields, borrowed (the settings are embedded as
    /// their stored JSON text, not parsed).
    fn form(&self) -> Form<'_> {
        let settings =
            serde_json::from_str::<&RawValue>(&self.settings).unwrap_or_else(|_| empty_settings());
        Form {
            creator_id: &self.creator_id,
            creator_name: &self.creator_name,
            game_id: &self.game_id,
            game_server_url: &self.game_server_url,
            players: &self.players,
            product_id: &self.product_id,
            settings,
        }
    }

    /// The lobby listing form.
    pub fn partial_json(&self) -> String {
        serde_json::to_string(&self.form()).unwrap_or_default()
    }

    /// The form returned to the creator and to joiners.
    pub fn full_json(&self) -> String {
        self.full_json_matched(None)
    }

    /// The full form with quick match's `matched` (`joined` or `created`)
    /// when given.
    pub fn full_json_matched(&self, matched: Option<&'static str>) -> String {
        let full = FullForm {
            last_updated: format_timestamp(self.last_updated_us),
            form: self.form(),
            matched,
            state: self.state.as_str(),
            target_game_server: &self.target_game_server,
            token: &self.token,
        };
        serde_json::to_string(&full).unwrap_or_default()
    }
}

/// `{}` as a raw JSON value.
fn empty_settings() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".into()).unwrap_or_default())
}

/// The partial (listing) form of a game, as serialized.
#[derive(Serialize)]
struct Form<'a> {
    creator_id: &'a str,
    creator_name: &'a str,
    game_id: &'a str,
    game_server_url: &'a str,
    players: &'a [String],
    product_id: &'a str,
    settings: &'a RawValue,
}

/// The full form: the listing form plus the private fields.
#[derive(Serialize)]
struct FullForm<'a> {
    #[serde(rename = "_last_updated")]
    last_updated: String,
    #[serde(flatten)]
    form: Form<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<&'static str>,
    state: &'static str,
    target_game_server: &'a str,
    token: &'a str,
}

/// Formats µs since the epoch as the original did: `22-Nov-2026 (08:31:08.123456)`.
pub fn format_timestamp(us: u64) -> String {
    let nanos = i128::from(us) * 1000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => t
            .format(time::macros::format_description!(
                "[day]-[month repr:short]-[year] ([hour]:[minute]:[second].[subsecond digits:6])"
            ))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// What a logged matchmaker event asks of a game (API.md "Event ingest").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GameEvent {
    /// `state_change`; `None` for a state name the machine does not know.
    Move(Option<State>),
    /// `game_removed`.
    Remove,
    /// `player_disconnect` of this player.
    Disconnect(String),
}

/// What applying a [`GameEvent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The game moved from a state to another, or was deleted (`None`).
    Moved(State, Option<State>),
    /// A player left and the game, once in this state, is listed again.
    Reset(State),
    /// Forbidden transition, unknown state, or a player not in the game.
    Ignored,
}

impl Game {
    /// Applies a logged event (appended at `now_us`); `place` is the lobby
    /// place the game takes if the event lists it (the back of the lobby).
    /// For [`Effect::Moved`] with `None` the caller deletes the game.
    pub fn apply(&mut self, event: &GameEvent, place: u64, now_us: u64) -> Effect {
        let from = self.state;
        match event {
            GameEvent::Move(Some(to)) if self.move_to(*to, place, now_us) => {
                Effect::Moved(from, Some(*to))
            }
            GameEvent::Disconnect(player) if self.disconnect(player, place, now_us) => {
                Effect::Reset(from)
            }
            GameEvent::Remove => Effect::Moved(from, None),
            _ => Effect::Ignored,
        }
    }
}

/// Seconds a game may stay in each state before curation acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(pub [u64; 5]);

impl Expiry {
    /// Seconds a game may stay in `state`.
    pub fn secs(&self, state: State) -> u64 {
        self.0[state as usize]
    }
}

/// What curation does with an expired game (API.md "Curation").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Curation {
    /// Remove this player (the last to reserve a seat) and list it again.
    Reset(String),
    /// Delete the game.
    Delete,
}

impl Curation {
    /// Decides what to do with an expired game.
    pub fn decide(game: &Game) -> Curation {
        match game.players.last() {
            Some(last)
                if game.state == State::CreatorJoined
                    && game.is_full()
                    && game.players.len() > 1 =>
            {
                Curation::Reset(last.clone())
            }
            _ => Curation::Delete,
        }
    }
}

/// A change curation makes to a game that is still as it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurationChange {
    /// Drop the last seat and restart the clock.
    Reset,
    /// Delete the game.
    Delete,
    /// The game server could not be reached: this many failures so far.
    Failed(u32),
}

impl Game {
    /// Applies a curation change; `false` means delete the game. A reset
    /// game is listed again at `place` (the back of the lobby).
    pub fn curate(&mut self, change: &CurationChange, place: u64, now_us: u64) -> bool {
        match change {
            CurationChange::Reset => {
                if self.reset_last_seat(now_us).is_some() {
                    self.listing = Some(place);
                }
                self.curation_failures = 0;
                true
            }
            CurationChange::Delete => false,
            CurationChange::Failed(n) => {
                self.curation_failures = *n;
                true
            }
        }
    }
}

/// A game in `created` with creator "1" of product `exrps` (for tests).
#[cfg(test)]
pub(crate) fn sample(game_id: &str, since_us: u64) -> Game {
    Game {
        game_id: game_id.into(),
        product_id: "exrps".into(),
        game_server_url: "http://x".into(),
        creator_id: "1".into(),
        creator_name: "alice".into(),
        players: vec!["1".into()],
        settings: r#"{"num_players":2}"#.into(),
        num_players: 2,
        token: "t".into(),
        state: State::Created,
        state_since_us: since_us,
        last_updated_us: since_us,
        listing: None,
        target_game_server: "127.0.0.1:8085".into(),
        curation_failures: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(num_players: u32) -> Game {
        Game {
            num_players,
            ..sample("g", 0)
        }
    }

    #[test]
    fn state_machine_moves_forward_one_step_or_ends() {
        use State::*;
        assert!(Created.can_move_to(CreatorJoined));
        assert!(CreatorJoined.can_move_to(AllPlayersJoined));
        assert!(AllPlayersJoined.can_move_to(InProgress));
        assert!(InProgress.can_move_to(Ended));
        assert!(!Created.can_move_to(Ended), "no skipping to ended");
        assert!(!CreatorJoined.can_move_to(Ended));
        assert!(!AllPlayersJoined.can_move_to(Created));
        assert!(!Created.can_move_to(InProgress));
        assert!(!InProgress.can_move_to(CreatorJoined));
        assert!(!Ended.can_move_to(Ended));
        assert!(!CreatorJoined.can_move_to(CreatorJoined));
    }

    #[test]
    fn join_rules() {
        let mut g = game(2);
        assert_eq!(
            g.join("2", 5),
            Err(JoinRefusal::NotJoinable),
            "still created"
        );
        assert!(g.move_to(State::CreatorJoined, 7, 1));
        assert_eq!(g.listing, Some(7));
        assert!(g.is_listed());
        assert_eq!(g.join("1", 5), Err(JoinRefusal::AlreadyJoined));
        assert_eq!(g.join("2", 5), Ok(()));
        assert!(g.is_full() && !g.is_listed());
        assert_eq!(g.join("2", 5), Err(JoinRefusal::AlreadyJoined));
        assert_eq!(g.join("3", 5), Err(JoinRefusal::NotJoinable));
        assert!(g.leave("2", 6));
        assert!(g.is_listed());
        assert!(!g.leave("1", 6), "the creator cannot leave");
    }

    #[test]
    fn num_players_is_honoured() {
        let mut g = game(3);
        g.move_to(State::CreatorJoined, 1, 1);
        g.join("2", 2).unwrap();
        assert!(g.is_listed());
        g.join("3", 3).unwrap();
        assert!(!g.is_listed());
    }

    #[test]
    fn disconnect_resets_to_creator_joined() {
        let mut g = game(2);
        g.move_to(State::CreatorJoined, 1, 1);
        g.join("2", 2).unwrap();
        g.move_to(State::AllPlayersJoined, 9, 3);
        g.move_to(State::InProgress, 9, 4);
        assert!(!g.disconnect("1", 9, 5), "creator");
        assert!(g.disconnect("2", 9, 5));
        assert_eq!(g.state, State::CreatorJoined);
        assert_eq!(g.players, vec!["1"]);
        assert_eq!(g.listing, Some(9), "listed again at the back");
        assert!(!g.disconnect("2", 9, 6), "already gone");
    }

    #[test]
    fn reset_last_seat() {
        let mut g = game(2);
        g.move_to(State::CreatorJoined, 1, 1);
        assert_eq!(g.reset_last_seat(2), None);
        g.join("2", 2).unwrap();
        assert_eq!(g.reset_last_seat(3), Some("2".into()));
        assert_eq!(g.state_since_us, 3);
        assert!(g.is_listed());
    }

    #[test]
    fn timestamp_format_matches_the_original() {
        // 2026-11-22T08:31:08.123456Z
        assert_eq!(
            format_timestamp(1_795_336_268_123_456),
            "22-Nov-2026 (08:31:08.123456)"
        );
    }

    #[test]
    fn json_forms() {
        let g = game(2);
        let partial: serde_json::Value = serde_json::from_str(&g.partial_json()).unwrap();
        assert!(partial.get("token").is_none());
        assert_eq!(partial["settings"]["num_players"], 2);
        assert_eq!(partial["players"], serde_json::json!(["1"]));
        let full: serde_json::Value = serde_json::from_str(&g.full_json()).unwrap();
        assert_eq!(full["state"], "created");
        assert_eq!(full["target_game_server"], "127.0.0.1:8085");
        assert_eq!(full["_last_updated"], "01-Jan-1970 (00:00:00.000000)");
        assert_eq!(full["settings"], partial["settings"]);
        let mut bad = g.clone();
        bad.settings = "not json".into();
        let partial: serde_json::Value = serde_json::from_str(&bad.partial_json()).unwrap();
        assert_eq!(partial["settings"], serde_json::json!({}));
    }

    #[test]
    fn full_creator_joined_games_are_reset_others_deleted() {
        let mut g = game(2);
        assert_eq!(Curation::decide(&g), Curation::Delete);
        g.move_to(State::CreatorJoined, 1, 1);
        assert_eq!(
            Curation::decide(&g),
            Curation::Delete,
            "listed, nobody joined"
        );
        g.join("2", 2).unwrap();
        assert_eq!(Curation::decide(&g), Curation::Reset("2".into()));
        assert!(g.curate(&CurationChange::Reset, 20, 9));
        assert_eq!((g.players.len(), g.state_since_us), (1, 9));
        g.join("2", 10).unwrap();
        g.move_to(State::AllPlayersJoined, 1, 11);
        assert_eq!(Curation::decide(&g), Curation::Delete);
        assert!(!g.curate(&CurationChange::Delete, 21, 12));
    }

    #[test]
    fn events_applied_to_a_game() {
        let mut g = game(2);
        assert_eq!(
            g.apply(&GameEvent::Move(Some(State::CreatorJoined)), 5, 1),
            Effect::Moved(State::Created, Some(State::CreatorJoined))
        );
        assert_eq!(g.listing, Some(5));
        assert_eq!(g.apply(&GameEvent::Move(None), 6, 2), Effect::Ignored);
        g.join("2", 3).unwrap();
        assert_eq!(
            g.apply(&GameEvent::Disconnect("2".into()), 7, 4),
            Effect::Reset(State::CreatorJoined)
        );
        assert_eq!(
            g.apply(&GameEvent::Remove, 8, 5),
            Effect::Moved(State::CreatorJoined, None)
        );
    }
}
