//! Import from the original (API.md "Import from the original"): the
//! original services' records, as read out of their Redis, checked whole
//! and converted before anything is written, then written through the
//! storage port in one step.
//!
//! Stream entries that either consumer had not applied are appended in
//! stream order; each cursor is placed after the appended entries that
//! consumer had already applied, so each applies exactly what the
//! original had not. Listed games keep their lobby order (places 1..n) ahead
//! of every game listed after the import (the writer gives each new listing
//! the next place after the highest stored).

use std::collections::{BTreeMap, HashMap};

use super::ports::{Counters, Imported};
use crate::domain::event::parse_frame;
use crate::domain::game::State;
use crate::domain::original::{EntryId, event_object, parse_game};
use crate::infra::config::ProductConfig;

/// The original's records, raw, as read from its Redis.
#[derive(Debug, Clone, Default)]
pub struct Original {
    /// (key, game id, JSON) from each `__games:<product>` hash.
    pub games: Vec<(String, String, String)>,
    /// (key, game id, Unix seconds when listed) from `__lobby_games:<product>`.
    pub lobby: Vec<(String, String, f64)>,
    /// Every other key that names a product (`__pending_games:…`, …).
    pub other_keys: Vec<String>,
    /// (key, user, score) from each `_lb:wins:<product>`.
    pub boards: Vec<(String, String, f64)>,
    /// (key, counter, value) from each `_pstats:<user>:<product>`.
    pub stats: Vec<(String, String, String)>,
    /// The stream's entries in order: (entry id, field/value pairs).
    pub stream: Vec<(String, Vec<(String, String)>)>,
    /// The last entries the matchmaker and the stats tracker applied.
    pub matchmaker_index: Option<String>,
    pub stats_index: Option<String>,
}

/// A record the import cannot take; nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("key {key}: product {product:?} is not in the config")]
    UnknownProduct { key: String, product: String },
    #[error("unreadable record {what}: {why}")]
    Unreadable { what: String, why: String },
}

fn unreadable(what: impl Into<String>, why: impl Into<String>) -> ImportError {
    ImportError::Unreadable {
        what: what.into(),
        why: why.into(),
    }
}

/// What was copied for one product.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductSummary {
    pub games: u64,
    pub listed: u64,
    pub board_entries: u64,
    pub player_stats: u64,
}

/// What an import copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub products: BTreeMap<String, ProductSummary>,
    /// Events appended, and how many of them each consumer will apply.
    pub events: u64,
    pub matchmaker_pending: u64,
    pub stats_pending: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (product, s) in &self.products {
            writeln!(
                f,
                "{product}: {} games ({} listed), {} board entries, {} player stats",
                s.games, s.listed, s.board_entries, s.player_stats
            )?;
        }
        write!(
            f,
            "log: {} events appended; the matchmaker will apply {}, the stats tracker {}",
            self.events, self.matchmaker_pending, self.stats_pending
        )
    }
}

/// The product a key names after `prefix`, which must be configured.
fn product_of<'a>(
    key: &'a str,
    product: &'a str,
    products: &HashMap<String, ProductConfig>,
) -> Result<&'a str, ImportError> {
    if products.contains_key(product) {
        Ok(product)
    } else {
        Err(ImportError::UnknownProduct {
            key: key.to_string(),
            product: product.to_string(),
        })
    }
}

/// The product named by a `<prefix><product>` key.
pub fn key_product<'a>(
    key: &'a str,
    products: &HashMap<String, ProductConfig>,
) -> Result<&'a str, ImportError> {
    let product = if let Some(rest) = key.strip_prefix("_pstats:") {
        rest.rsplit_once(':').map(|(_, p)| p).unwrap_or(rest)
    } else if let Some(rest) = key.strip_prefix("_lb:") {
        rest.split_once(':').map(|(_, p)| p).unwrap_or(rest)
    } else {
        key.split_once(':').map(|(_, p)| p).unwrap_or(key)
    };
    product_of(key, product, products)
}

/// A count the original stored as a string or float, as an integer.
fn integer(text: &str) -> Option<i64> {
    let text = text.trim();
    text.parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f.round() as i64)
    })
}

/// Checks and converts the whole dataset.
pub fn convert(
    original: Original,
    products: &HashMap<String, ProductConfig>,
) -> Result<(Imported, Summary), ImportError> {
    let mut summary = Summary::default();
    for key in &original.other_keys {
        key_product(key, products)?;
    }
    for p in products.keys() {
        summary
            .products
            .insert(p.clone(), ProductSummary::default());
    }

    // The lobby order: oldest listing first, then game id, per product.
    let mut lobby: Vec<(String, String, f64)> = Vec::new();
    for (key, game_id, score) in original.lobby {
        let product = key_product(&key, products)?.to_string();
        lobby.push((product, game_id, score));
    }
    lobby.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.total_cmp(&b.2)).then(a.1.cmp(&b.1)));
    let mut places: HashMap<(String, String), u64> = HashMap::new();
    for (i, (product, game_id, _)) in lobby.into_iter().enumerate() {
        places.insert((product, game_id), i as u64 + 1);
    }
    let mut next_place = places.len() as u64 + 1;

    let mut games = Vec::with_capacity(original.games.len());
    let mut unlisted_live = Vec::new();
    for (key, game_id, json) in original.games {
        let product = key_product(&key, products)?;
        let config = &products[product];
        let listing = places.get(&(product.to_string(), game_id.clone())).copied();
        let game = parse_game(product, &json, listing, &config.game_socket_url)
            .map_err(|why| unreadable(format!("{key} game {game_id}"), why))?;
        if game.game_id != game_id {
            return Err(unreadable(
                format!("{key} game {game_id}"),
                format!("its JSON says game_id {:?}", game.game_id),
            ));
        }
        let entry = summary.products.entry(product.to_string()).or_default();
        entry.games += 1;
        if game.is_listed() {
            entry.listed += 1;
        }
        if listing.is_none() && game.state != State::Created && game.state != State::Ended {
            unlisted_live.push(games.len());
        }
        games.push(game);
    }
    // Games past their listing keep a place after the lobby's, by age.
    unlisted_live.sort_by_key(|&i| (games[i].state_since_us, games[i].game_id.clone()));
    for i in unlisted_live {
        games[i].listing = Some(next_place);
        next_place += 1;
    }

    let mut players: BTreeMap<(String, String), (Option<i64>, Counters)> = BTreeMap::new();
    for (key, user, score) in original.boards {
        let product = key_product(&key, products)?.to_string();
        if !score.is_finite() {
            return Err(unreadable(
                format!("{key} member {user}"),
                "a score that is not a number",
            ));
        }
        players.entry((product.clone(), user)).or_default().0 = Some(score.round() as i64);
        summary.products.entry(product).or_default().board_entries += 1;
    }
    let mut stats_players = std::collections::BTreeSet::new();
    for (key, counter, value) in original.stats {
        let product = key_product(&key, products)?.to_string();
        let user = key
            .strip_prefix("_pstats:")
            .and_then(|rest| rest.rsplit_once(':'))
            .map(|(user, _)| user.to_string())
            .ok_or_else(|| unreadable(key.clone(), "not _pstats:<user>:<product>"))?;
        let n = integer(&value).ok_or_else(|| {
            unreadable(
                format!("{key} field {counter}"),
                format!("{value:?} is not an integer"),
            )
        })?;
        players
            .entry((product.clone(), user.clone()))
            .or_default()
            .1
            .insert(counter, n);
        if stats_players.insert((product.clone(), user)) {
            summary.products.entry(product).or_default().player_stats += 1;
        }
    }

    let index = |name: &str, value: &Option<String>| -> Result<Option<EntryId>, ImportError> {
        match value {
            None => Ok(None),
            Some(text) => EntryId::parse(text).map(Some).ok_or_else(|| {
                unreadable(name.to_string(), format!("{text:?} is not a stream id"))
            }),
        }
    };
    let mm_index = index("__game_event_stream_index", &original.matchmaker_index)?;
    let stats_index = index(
        "_stats_tracker.workers.event_stream_index",
        &original.stats_index,
    )?;
    let all: Vec<String> = products.keys().cloned().collect();
    let known = |p: &str| products.contains_key(p);
    let mut imported = Imported::default();
    for (entry, pairs) in original.stream {
        let id = EntryId::parse(&entry)
            .ok_or_else(|| unreadable(format!("stream entry {entry}"), "not a stream id"))?;
        let for_matchmaker = id.after(mm_index);
        let for_stats = id.after(stats_index);
        if !for_matchmaker && !for_stats {
            continue;
        }
        let json = event_object(&pairs);
        let what = format!("game_event_stream entry {entry}");
        if let Some((_, product)) = pairs.iter().rev().find(|(f, _)| f == "product_id") {
            product_of(&what, product, products)?;
        }
        parse_frame(&json, &all, &known).map_err(|e| unreadable(what, e.message))?;
        if !for_matchmaker {
            imported.matchmaker_cursor += 1;
        }
        if !for_stats {
            imported.stats_cursor += 1;
        }
        imported.events.push(json);
    }
    summary.events = imported.events.len() as u64;
    summary.matchmaker_pending = summary.events - imported.matchmaker_cursor;
    summary.stats_pending = summary.events - imported.stats_cursor;
    imported.games = games;
    imported.players = players
        .into_iter()
        .map(|((product, user), (score, counters))| (product, user, score, counters))
        .collect();
    Ok((imported, summary))
}
