//! One test suite for every storage backend: the promises of the ports,
//! checked through the ports alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::app::ports::{
    ConsumerName, Entry, Imported, MatchmakerBatch, NewFrame, QuickRule, SeasonRef, SeatOutcome,
    StatsBatch, StatsChange, Storage,
};
use crate::domain::event::Dedup;
use crate::domain::game::{CurationChange, Effect, Game, GameEvent, JoinRefusal, State};
use crate::domain::scoring::{Elo, Scoring, Wins};
use crate::domain::season::Season;

fn game(id: &str, since: u64) -> Game {
    crate::domain::game::sample(id, since)
}

fn listed(storage: &dyn Storage) -> Vec<String> {
    let page: Vec<serde_json::Value> =
        serde_json::from_str(&storage.open_games("exrps", 0, 100)).unwrap();
    page.iter()
        .map(|g| g["game_id"].as_str().unwrap().to_string())
        .collect()
}

fn mm(cursor: u64, events: Vec<(u64, &str, GameEvent)>) -> MatchmakerBatch {
    MatchmakerBatch {
        events: events
            .into_iter()
            .map(|(id, game, e)| (id, id * 10, game.to_string(), "exrps".to_string(), e))
            .collect(),
        cursor,
    }
}

/// Runs every check against `storage` (which must start empty).
pub async fn run(storage: Arc<dyn Storage>) {
    games_seats_and_the_lobby(storage.as_ref()).await;
    the_log(storage.as_ref()).await;
    boards(storage.as_ref()).await;
    seasons(storage.as_ref()).await;
    quick_match(storage.as_ref()).await;
}

/// Seasons: a `game_over` counts on its season's board whatever order the
/// seasons arrive in (elo from 1000 in each); a season is stored with its
/// first game; the batch that stores one more than `keep` + 1 drops the
/// oldest, whose late results are then ignored; the lifetime board and the
/// counters are untouched.
async fn seasons(s: &dyn Storage) {
    let mut rules: BTreeMap<String, Box<dyn Scoring>> = BTreeMap::new();
    rules.insert("sea".into(), Box::new(Elo));
    let scoring: crate::app::ports::ScoringRules = Arc::new(rules);
    let week = |n: i64| Season {
        id: format!("2026-W{n}"),
        starts_ms: n * 1000,
        ends_ms: (n + 1) * 1000,
    };
    let game_over = |w: &str, l: &str, n: i64| StatsChange::GameOver {
        product: "sea".into(),
        winner: w.into(),
        loser: l.into(),
        season: Some(SeasonRef {
            season: week(n),
            keep: 1,
        }),
    };
    let mut cursor = s.cursor(ConsumerName::Stats).await.unwrap();
    let mut apply = async |changes: Vec<StatsChange>| {
        cursor += 1;
        let batch = StatsBatch {
            changes,
            scoring: scoring.clone(),
            cursor,
        };
        s.apply_stats(batch).await.unwrap();
    };
    let board = async |n: Option<i64>| -> Vec<(String, i64)> {
        let season = n.map(|n| week(n).id);
        s.window("sea", season.as_deref(), 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.user_id, e.score))
            .collect()
    };
    let listed = async || -> Vec<(String, u64)> {
        let list = s.boards("sea").await.unwrap();
        assert_eq!(list.lifetime_players, 0, "seasons leave the lifetime board");
        list.seasons
            .into_iter()
            .map(|b| (b.season.id, b.players))
            .collect()
    };
    let (w, l) = Elo.game_over(1000, 1000);
    let (w2, l2) = Elo.game_over(w, l);

    apply(vec![game_over("a", "b", 47)]).await;
    apply(vec![game_over("c", "a", 48), game_over("a", "b", 47)]).await;
    assert_eq!(
        listed().await,
        [("2026-W48".into(), 2), ("2026-W47".into(), 2)]
    );
    assert_eq!(board(Some(47)).await, [("a".into(), w2), ("b".into(), l2)]);
    assert_eq!(
        board(Some(48)).await,
        [("c".into(), w), ("a".into(), l)],
        "elo starts again at 1000"
    );
    assert!(board(None).await.is_empty());
    assert_eq!(
        s.rank("sea", Some("2026-W47"), "b").await.unwrap(),
        Some((l2, 2))
    );
    let around = s.around("sea", Some("2026-W48"), "a", 1).await.unwrap();
    assert_eq!(around.map(|r| (r.score, r.rank)), Some((l, 2)));

    apply(vec![game_over("x", "y", 49)]).await;
    assert_eq!(
        listed().await,
        [("2026-W49".into(), 2), ("2026-W48".into(), 2)],
        "keep 1 archived season"
    );
    assert!(board(Some(47)).await.is_empty());
    assert_eq!(s.rank("sea", Some("2026-W47"), "a").await.unwrap(), None);
    apply(vec![game_over("a", "b", 47)]).await;
    assert_eq!(
        listed().await,
        [("2026-W49".into(), 2), ("2026-W48".into(), 2)],
        "a late result of a dropped season is ignored"
    );
    assert!(board(Some(47)).await.is_empty());
    assert!(s.player_stats("sea", "a").await.unwrap().is_empty());
}

/// Quick match: the oldest listing, or the creator closest in score (a
/// player without one counts as `initial`); a game the player is in or a
/// full one is passed over; `None` when nothing suits.
async fn quick_match(s: &dyn Storage) {
    let mut cursor = s.cursor(ConsumerName::Matchmaker).await.unwrap();
    // Creators "3" (score 1) and "2" (score 0) from `boards`, "new" unrated.
    for (id, creator) in [("q-3", "3"), ("q-2", "2"), ("q-new", "new")] {
        let mut g = game(id, 5);
        g.creator_id = creator.into();
        g.players = vec![creator.into()];
        s.insert_game(g).await.unwrap();
        cursor += 1;
        s.apply_matchmaker(mm(
            cursor,
            vec![(cursor, id, GameEvent::Move(Some(State::CreatorJoined)))],
        ))
        .await
        .unwrap();
    }
    let closest = QuickRule::Closest {
        initial: 5,
        max_gap: 1,
    };
    let seat = |user: &'static str, rule| async move {
        s.quick_seat("exrps", user, rule, 50)
            .await
            .unwrap()
            .map(|g| (g.game_id, g.players))
    };
    // "1" has score 2: "q-3" (score 1) is the only one within 1.
    assert_eq!(
        seat("1", closest).await,
        Some(("q-3".to_string(), vec!["3".to_string(), "1".to_string()]))
    );
    // "x" counts as 5: the unrated creator (also 5) is closest.
    assert_eq!(
        seat("x", closest).await.map(|g| g.0).as_deref(),
        Some("q-new")
    );
    assert_eq!(seat("y", closest).await, None, "nothing within the gap");
    // "a", listed by `games_seats_and_the_lobby`, is the oldest listing.
    assert_eq!(
        seat("2", QuickRule::Oldest).await.map(|g| g.0).as_deref(),
        Some("a")
    );
    assert_eq!(
        seat("2", QuickRule::Oldest).await,
        None,
        "its own game is the only open one left"
    );
    assert_eq!(
        seat("z", QuickRule::Oldest).await.map(|g| g.0).as_deref(),
        Some("q-2")
    );
    assert_eq!(seat("w", QuickRule::Oldest).await, None);
}

async fn games_seats_and_the_lobby(s: &dyn Storage) {
    for id in ["b", "a"] {
        s.insert_game(game(id, 5)).await.unwrap();
    }
    assert!(listed(s).is_empty(), "created games are not listed");
    let applied = s
        .apply_matchmaker(mm(
            2,
            vec![
                (1, "b", GameEvent::Move(Some(State::CreatorJoined))),
                (2, "a", GameEvent::Move(Some(State::CreatorJoined))),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(applied.len(), 2);
    assert_eq!(listed(s), ["b", "a"], "oldest listing first");
    let again = s
        .apply_matchmaker(mm(2, vec![(2, "a", GameEvent::Remove)]))
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "a batch at the cursor is not applied again"
    );
    assert_eq!(s.cursor(ConsumerName::Matchmaker).await.unwrap(), 2);

    let seat = s.reserve_seat("exrps", "b", "2", 50).await.unwrap();
    assert!(matches!(seat, SeatOutcome::Reserved(ref g) if g.players == ["1", "2"]));
    assert_eq!(listed(s), ["a"], "a full game leaves the lobby");
    assert_eq!(
        s.reserve_seat("exrps", "b", "3", 51).await.unwrap(),
        SeatOutcome::Refused(JoinRefusal::NotJoinable)
    );
    assert_eq!(
        s.reserve_seat("exrps", "a", "1", 51).await.unwrap(),
        SeatOutcome::Refused(JoinRefusal::AlreadyJoined)
    );
    assert_eq!(
        s.reserve_seat("chess", "a", "3", 51).await.unwrap(),
        SeatOutcome::NotFound
    );
    assert!(s.release_seat("b", "2", 52).await.unwrap());
    assert!(!s.release_seat("b", "2", 53).await.unwrap());
    assert_eq!(listed(s), ["b", "a"], "back in its place");

    // [all_players_joined, player_disconnect] in one batch.
    s.reserve_seat("exrps", "a", "2", 60).await.unwrap();
    let applied = s
        .apply_matchmaker(mm(
            4,
            vec![
                (3, "a", GameEvent::Move(Some(State::AllPlayersJoined))),
                (4, "a", GameEvent::Disconnect("2".into())),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(applied[1].effect, Effect::Reset(State::AllPlayersJoined));
    assert_eq!(listed(s), ["b", "a"]);

    let expired = s.expired(State::CreatorJoined, 55, 10).await.unwrap();
    let ids: Vec<&str> = expired.iter().map(|g| g.game_id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "b"],
        "a since 40 (its reset), b since 50 (its join)"
    );
    assert!(s.expired(State::CreatorJoined, 45, 10).await.unwrap().len() == 1);
    let b = &expired[1];
    assert!(
        !s.curate(
            "b",
            b.state,
            b.state_since_us + 1,
            CurationChange::Delete,
            70
        )
        .await
        .unwrap(),
        "changed meanwhile"
    );
    assert!(
        s.curate(
            "b",
            b.state,
            b.state_since_us,
            CurationChange::Failed(1),
            70
        )
        .await
        .unwrap()
    );
    assert!(
        s.curate("b", b.state, b.state_since_us, CurationChange::Delete, 71)
            .await
            .unwrap()
    );
    assert_eq!(listed(s), ["a"]);
    let counts = s.game_counts().await.unwrap();
    assert_eq!(counts, vec![("exrps".to_string(), State::CreatorJoined, 1)]);
}

async fn the_log(s: &dyn Storage) {
    let frame = |n: usize, producer: Option<(&str, u64)>| NewFrame {
        events: (0..n).map(|i| format!("{{\"n\":{i}}}")).collect(),
        dedup: producer.map(|(p, seq)| Dedup::Envelope {
            producer: p.to_string(),
            seq,
        }),
    };
    let first = s.submit(frame(2, Some(("p", 1)))).await.unwrap();
    let first = first.wait().await.unwrap();
    assert_eq!((first.first_id, first.last_id, first.count), (1, 2, 2));
    let dup = s.submit(frame(2, Some(("p", 1)))).await.unwrap();
    let dup = dup.wait().await.unwrap();
    assert!(dup.duplicate && dup.count == 0 && dup.last_id == 2);
    let next = s
        .submit(frame(3, None))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!((next.first_id, next.last_id), (3, 5));
    assert!(
        s.submit(frame(0, None))
            .await
            .unwrap()
            .wait()
            .await
            .is_err(),
        "an empty frame"
    );
    assert_eq!(*s.durable().borrow(), 5);
    let events = s.read(1, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    assert_eq!(events[0].json, "{\"n\":1}");
    assert_eq!(s.drop_before(2, u64::MAX).await.unwrap(), 2);
    assert_eq!(s.read(0, 10).await.unwrap()[0].id, 3);
    idmp(s).await;
}

/// Redis `IDMP`: one entry per (producer, iid), the last `keep` remembered;
/// repeats queued in the same group are recognised too.
async fn idmp(s: &dyn Storage) {
    let frame = |producer: &str, iid: &str| NewFrame {
        events: vec![format!("{{\"iid\":\"{iid}\"}}")],
        dedup: Some(Dedup::Idmp {
            producer: producer.into(),
            iid: iid.into(),
            keep: 2,
        }),
    };
    let mut pending = Vec::new();
    for (p, iid) in [("a", "1"), ("a", "1"), ("b", "1"), ("a", "2")] {
        pending.push(s.submit(frame(p, iid)).await.unwrap());
    }
    let mut answers = Vec::new();
    for p in pending {
        let a = p.wait().await.unwrap();
        answers.push((a.first_id, a.count, a.duplicate));
    }
    let first = answers[0].0;
    assert_eq!(
        answers,
        [
            (first, 1, false),
            (first, 0, true),
            (first + 1, 1, false),
            (first + 2, 1, false),
        ]
    );
    let again = s
        .submit(frame("a", "2"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(again.duplicate && again.first_id == first + 2);
    s.submit(frame("a", "3"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let forgotten = s
        .submit(frame("a", "1"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(
        !forgotten.duplicate,
        "only the last 2 iids of a producer are kept"
    );
}

async fn boards(s: &dyn Storage) {
    let mut rules: BTreeMap<String, Box<dyn Scoring>> = BTreeMap::new();
    rules.insert("exrps".into(), Box::new(Wins));
    let scoring = Arc::new(rules);
    let game_over = |w: &str, l: &str| StatsChange::GameOver {
        product: "exrps".into(),
        winner: w.into(),
        loser: l.into(),
        season: None,
    };
    let batch = StatsBatch {
        changes: vec![
            game_over("1", "2"),
            game_over("3", "2"),
            game_over("1", "3"),
            StatsChange::Count {
                product: "exrps".into(),
                user: "1".into(),
                counter: "wins",
                delta: 2,
            },
        ],
        scoring: scoring.clone(),
        cursor: 7,
    };
    s.apply_stats(batch).await.unwrap();
    let again = StatsBatch {
        changes: vec![game_over("2", "1")],
        scoring,
        cursor: 7,
    };
    s.apply_stats(again).await.unwrap();
    assert_eq!(s.cursor(ConsumerName::Stats).await.unwrap(), 7);
    let top: Vec<(String, i64)> = s
        .window("exrps", None, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.user_id, e.score))
        .collect();
    assert_eq!(
        top,
        [("1".into(), 2), ("3".into(), 1), ("2".into(), 0)],
        "a batch at the cursor is not applied again"
    );
    assert_eq!(s.rank("exrps", None, "3").await.unwrap(), Some((1, 2)));
    assert_eq!(s.rank("exrps", None, "9").await.unwrap(), None);
    let entry = |user: &str, score: i64| Entry {
        user_id: user.into(),
        score,
    };
    let around = s.around("exrps", None, "3", 1).await.unwrap().unwrap();
    assert_eq!((around.score, around.rank), (1, 2));
    assert_eq!(
        around.around,
        [(entry("1", 2), 1), (entry("3", 1), 2), (entry("2", 0), 3)]
    );
    let top = s.around("exrps", None, "1", 0).await.unwrap().unwrap();
    assert_eq!(top.around, [(entry("1", 2), 1)]);
    assert_eq!(s.around("exrps", None, "9", 5).await.unwrap(), None);
    assert_eq!(
        s.player_stats("exrps", "1").await.unwrap().get("wins"),
        Some(&2)
    );
    assert!(s.player_stats("exrps", "9").await.unwrap().is_empty());
}

/// An import into an empty backend (which `storage` must be): games keep
/// their lobby order ahead of later listings, events get ids from 1, each
/// cursor is where the import put it, boards rank the imported scores, and
/// a second import is refused.
pub async fn run_import(storage: Arc<dyn Storage>) {
    let s = storage.as_ref();
    let mut games = Vec::new();
    for (id, listing) in [("late", 2), ("early", 1)] {
        let mut g = game(id, 5);
        g.state = State::CreatorJoined;
        g.listing = Some(listing);
        games.push(g);
    }
    games.push(game("new", 5));
    let mut counters = BTreeMap::new();
    counters.insert("rock_selection_count".to_string(), 4);
    let data = Imported {
        games,
        players: vec![
            ("exrps".into(), "7".into(), Some(3), counters.clone()),
            ("exrps".into(), "8".into(), Some(5), BTreeMap::new()),
        ],
        events: vec!["{\"n\":1}".into(), "{\"n\":2}".into()],
        matchmaker_cursor: 1,
        stats_cursor: 0,
    };
    s.import(data.clone()).await.unwrap();
    assert_eq!(listed(s), ["early", "late"]);
    let ids: Vec<u64> = s.read(0, 10).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(*s.durable().borrow(), 2);
    assert_eq!(s.cursor(ConsumerName::Matchmaker).await.unwrap(), 1);
    assert_eq!(s.cursor(ConsumerName::Stats).await.unwrap(), 0);
    assert_eq!(s.rank("exrps", None, "8").await.unwrap(), Some((5, 1)));
    assert_eq!(s.rank("exrps", None, "7").await.unwrap(), Some((3, 2)));
    assert_eq!(s.player_stats("exrps", "7").await.unwrap(), counters);

    s.apply_matchmaker(mm(
        2,
        vec![(2, "new", GameEvent::Move(Some(State::CreatorJoined)))],
    ))
    .await
    .unwrap();
    assert_eq!(
        listed(s),
        ["early", "late", "new"],
        "listed after the import"
    );
    assert!(s.import(data).await.is_err(), "only into an empty backend");
    let next = s
        .submit(NewFrame {
            events: vec!["{}".into()],
            dedup: None,
        })
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(next.first_id, 3, "ids go on after the imported events");
}
