//! Quick match (API.md "Quick match", with "Lobby", "Auth", "Errors", "Game
//! object" and "Leaderboards") against the real binary: which game an `elo`
//! and a `wins` product choose, the rating gap, concurrent quick joins on a
//! small lobby, a game server that refuses or does not answer, a client that
//! gives up mid-call, and the error answers.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    FakeGameServer, Mode, Options, Server, assert_error, listed, setup, token, wait_until,
};
use serde_json::{Value, json};

// ---- helpers ----

fn quick_path(product: &str) -> String {
    format!("/game_lobby/{product}/quick_join")
}

/// `POST /game_lobby/{product}/quick_join` as `user`.
async fn quick(server: &Server, product: &str, user: &str) -> (u16, Value) {
    server
        .post(&quick_path(product), Some(&token(user)), "")
        .await
}

/// The settings and socket address each product of the harness config has.
fn product_facts(product: &str) -> (Value, &'static str) {
    match product {
        "exrps" => (json!({"num_players": 2}), "127.0.0.1:8085"),
        "chess" => (json!({"num_players": 3}), "127.0.0.1:9095"),
        other => panic!("no product {other} in the harness config"),
    }
}

/// Asserts the fields every full game object has (API.md "Game object").
fn assert_full_game(fake: &FakeGameServer, product: &str, body: &Value) {
    let (settings, socket) = product_facts(product);
    assert_eq!(body["product_id"], product, "{body}");
    assert_eq!(body["game_server_url"], fake.url.as_str(), "{body}");
    assert_eq!(body["settings"], settings, "{body}");
    assert_eq!(body["target_game_server"], socket, "{body}");
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("tok-")),
        "the game server's gameToken: {body}"
    );
    let creator = body["creator_id"].as_str().expect("creator_id");
    assert_eq!(body["creator_name"], format!("user{creator}"), "{body}");
    assert_eq!(body["players"][0], creator, "the creator is first: {body}");
    assert!(body["_last_updated"].is_string(), "{body}");
    assert!(body["game_id"].is_string(), "{body}");
}

/// Asserts a quick join that joined `game`, whose players are now `players`.
fn assert_joined(
    fake: &FakeGameServer,
    product: &str,
    (status, body): &(u16, Value),
    game: &str,
    players: &[&str],
) {
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["matched"], "joined", "{body}");
    assert_eq!(body["game_id"], game, "{body}");
    assert_eq!(body["players"], json!(players), "{body}");
    assert_eq!(body["state"], "creator_joined", "{body}");
    assert_full_game(fake, product, body);
}

/// Asserts a quick join that created a game for `user`; returns its id.
fn assert_created(
    fake: &FakeGameServer,
    product: &str,
    (status, body): &(u16, Value),
    user: &str,
) -> String {
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["matched"], "created", "{body}");
    assert_eq!(body["state"], "created", "{body}");
    assert_eq!(body["creator_id"], user, "{body}");
    assert_eq!(body["players"], json!([user]), "{body}");
    assert_full_game(fake, product, body);
    let id = body["game_id"].as_str().unwrap().to_string();
    assert!(
        fake.calls("create_game")
            .contains(&json!({"gameId": id, "userId": user, "username": format!("user{user}")})),
        "the game server was asked to create {id} for {user}"
    );
    id
}

/// The players of `game` in the lobby listing, if it is listed.
async fn listed_players(server: &Server, product: &str, game: &str) -> Option<Value> {
    listed(server, product, game)
        .await
        .map(|g| g["players"].clone())
}

/// The ids of the listed games, in listing order.
async fn open_ids(server: &Server, product: &str) -> Vec<String> {
    server
        .open_games(product)
        .await
        .iter()
        .map(|g| g["game_id"].as_str().unwrap().to_string())
        .collect()
}

/// Owned copies of game ids, to compare with [`open_ids`].
fn ids(games: &[&String]) -> Vec<String> {
    games.iter().map(|g| g.to_string()).collect()
}

/// The recorded calls to `endpoint` as (game, user) pairs, in arrival order.
fn pairs(fake: &FakeGameServer, endpoint: &str) -> Vec<(String, String)> {
    fake.calls(endpoint)
        .iter()
        .map(|c| {
            (
                c["gameId"].as_str().unwrap_or_default().to_string(),
                c["userId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pair(game: &str, user: &str) -> (String, String) {
    (game.to_string(), user.to_string())
}

/// The recorded calls to `endpoint` for `game` and `user`.
fn calls_for(fake: &FakeGameServer, endpoint: &str, game: &str, user: &str) -> usize {
    pairs(fake, endpoint)
        .iter()
        .filter(|(g, u)| g == game && u == user)
        .count()
}

/// A player's score on a product's board, if they have one.
async fn score(server: &Server, product: &str, user: &str) -> Option<i64> {
    let (status, body) = server
        .get(&format!("/leaderboards/{product}/players/{user}"))
        .await;
    match status {
        200 => body["score"].as_i64(),
        404 => None,
        other => panic!("player score {product}/{user}: {other} {body}"),
    }
}

/// Expected `chess` (elo) scores, and the `game_over` events that give them:
/// 1000 to start, K = 32, rounded to integers (API.md "Leaderboards").
#[derive(Default)]
struct Elo {
    scores: HashMap<String, i64>,
    events: Vec<Value>,
    /// The named players whose score the pending events change.
    touched: BTreeSet<String>,
    games: usize,
}

impl Elo {
    fn score(&self, user: &str) -> i64 {
        self.scores.get(user).copied().unwrap_or(1000)
    }

    /// One game between two players.
    fn game(&mut self, winner: &str, loser: &str) {
        let expected = |me: i64, other: i64| 1.0 / (1.0 + 10f64.powf((other - me) as f64 / 400.0));
        let (w, l) = (self.score(winner), self.score(loser));
        let new_w = (w as f64 + 32.0 * (1.0 - expected(w, l))).round() as i64;
        let new_l = (l as f64 - 32.0 * expected(l, w)).round() as i64;
        self.scores.insert(winner.to_string(), new_w);
        self.scores.insert(loser.to_string(), new_l);
        self.games += 1;
        self.events.push(json!({
            "product_id": "chess", "game_id": format!("rating-{}", self.games),
            "type": "game_over", "winner_id": winner, "loser_id": loser,
        }));
    }

    /// `user` wins `n` games (loses `-n` when negative) against opponents
    /// who never played before.
    fn record(&mut self, user: &str, n: i32) {
        for _ in 0..n.unsigned_abs() {
            let fresh = format!("sparring-{}", self.games);
            if n > 0 {
                self.game(user, &fresh);
            } else {
                self.game(&fresh, user);
            }
        }
        self.touched.insert(user.to_string());
    }

    /// Sends the pending events and waits until the board shows every
    /// touched player's expected score.
    async fn apply(&mut self, server: &Server) {
        let events = Value::Array(std::mem::take(&mut self.events));
        let (status, body) = server.ingest("chess-secret", &events).await;
        assert_eq!(status, 200, "{body}");
        let touched = std::mem::take(&mut self.touched);
        for user in touched {
            let want = self.score(&user);
            wait_until(
                Duration::from_secs(10),
                &format!("{user} reaches {want} on the chess board"),
                || async { score(server, "chess", &user).await == Some(want) },
            )
            .await;
        }
    }
}

/// Creates a game for `creator` without listing it.
async fn created_game(server: &Server, product: &str, creator: &str) -> String {
    let (status, game) = server.create(product, creator).await;
    assert_eq!(status, 200, "{game}");
    game["game_id"].as_str().unwrap().to_string()
}

/// Lists a created game and waits until the lobby shows it.
async fn list(server: &Server, product: &str, game: &str) {
    server.state_change(product, game, "creator_joined").await;
    wait_until(Duration::from_secs(10), "the game is listed", || async {
        listed(server, product, game).await.is_some()
    })
    .await;
}

// ---- elo products ----

#[tokio::test(flavor = "multi_thread")]
async fn elo_quick_join_takes_the_creator_closest_in_score() {
    let (fake, server) = setup().await;
    let mut elo = Elo::default();
    elo.record("ca", 3); // 1046
    elo.record("cb", 8); // 1110
    elo.record("cc", -6); // 914
    elo.record("p1", 2); // 1031
    elo.record("p2", -1); // 984
    elo.record("p3", 7); // 1098
    elo.record("p4", -5); // 927
    elo.record("p9", -10); // 868
    elo.apply(&server).await;
    let expected = [
        ("ca", 1046),
        ("cb", 1110),
        ("cc", 914),
        ("p1", 1031),
        ("p2", 984),
        ("p3", 1098),
        ("p4", 927),
        ("p9", 868),
    ];
    for (user, want) in expected {
        assert_eq!(elo.score(user), want, "the scenario's arithmetic");
    }
    assert_eq!(score(&server, "chess", "cu").await, None, "cu is unrated");

    // Listed in an order that is not the score order: cc, cb, cu, ca.
    let gc = server.listed_game("chess", "cc").await;
    let gb = server.listed_game("chess", "cb").await;
    let gu = server.listed_game("chess", "cu").await;
    let ga = server.listed_game("chess", "ca").await;
    assert_eq!(open_ids(&server, "chess").await, ids(&[&gc, &gb, &gu, &ga]));

    // p1 (1031): ca 1046 is 15 away, the unrated cu (1000) 31.
    let r = quick(&server, "chess", "p1").await;
    assert_joined(&fake, "chess", &r, &ga, &["ca", "p1"]);
    assert_eq!(
        pairs(&fake, "join_game"),
        [pair(&ga, "p1")],
        "the game server is told about the join"
    );
    assert_eq!(
        fake.calls("join_game")[0],
        json!({"gameId": ga, "userId": "p1", "username": "userp1"})
    );
    assert_eq!(
        listed_players(&server, "chess", &ga).await,
        Some(json!(["ca", "p1"])),
        "one seat left: still listed, with the joiner"
    );

    // p2 (984): the unrated creator counts as 1000 (16 away); cc 914 is 70.
    let r = quick(&server, "chess", "p2").await;
    assert_joined(&fake, "chess", &r, &gu, &["cu", "p2"]);
    // p3 (1098): cb 1110.
    let r = quick(&server, "chess", "p3").await;
    assert_joined(&fake, "chess", &r, &gb, &["cb", "p3"]);
    // p4 (927): cc 914.
    let r = quick(&server, "chess", "p4").await;
    assert_joined(&fake, "chess", &r, &gc, &["cc", "p4"]);
    // p5, unrated (1000): cu, also 1000; that fills it.
    let r = quick(&server, "chess", "p5").await;
    assert_joined(&fake, "chess", &r, &gu, &["cu", "p2", "p5"]);
    assert_eq!(
        listed_players(&server, "chess", &gu).await,
        None,
        "a full game leaves the lobby"
    );
    // p6, unrated: ca 1046 (46) before cc 914 (86) and cb 1110 (110).
    let r = quick(&server, "chess", "p6").await;
    assert_joined(&fake, "chess", &r, &ga, &["ca", "p1", "p6"]);
    // p3 again: cb is closest but p3 is in it already; ga and gu are full;
    // cc 914 is 184 away, within the default gap of 200.
    let r = quick(&server, "chess", "p3").await;
    assert_joined(&fake, "chess", &r, &gc, &["cc", "p4", "p3"]);
    let open = server.open_games("chess").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["game_id"], gb.as_str());
    assert_eq!(open[0]["players"], json!(["cb", "p3"]));
    // p9 (868) is 242 from cb, beyond the default gap: a new game.
    let r = quick(&server, "chess", "p9").await;
    let created = assert_created(&fake, "chess", &r, "p9");
    assert_eq!(
        open_ids(&server, "chess").await,
        ids(&[&gb]),
        "a new game is not listed"
    );
    // p7, unrated: cb 1110 (110) is the only one left.
    let r = quick(&server, "chess", "p7").await;
    assert_joined(&fake, "chess", &r, &gb, &["cb", "p3", "p7"]);
    assert!(server.open_games("chess").await.is_empty());
    // p8: nothing listed; a new game.
    let r = quick(&server, "chess", "p8").await;
    let created_8 = assert_created(&fake, "chess", &r, "p8");
    assert_ne!(created, created_8);
    assert!(server.open_games("chess").await.is_empty());

    assert_eq!(
        pairs(&fake, "join_game"),
        [
            pair(&ga, "p1"),
            pair(&gu, "p2"),
            pair(&gb, "p3"),
            pair(&gc, "p4"),
            pair(&gu, "p5"),
            pair(&ga, "p6"),
            pair(&gc, "p3"),
            pair(&gb, "p7"),
        ],
        "one join_game per joined quick match, none for the created ones"
    );
    assert_eq!(fake.calls("create_game").len(), 6, "4 listed + 2 quick");
    assert!(fake.calls("remove_player").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn elo_ties_go_to_the_oldest_listing() {
    let (fake, server) = setup().await;
    let mut elo = Elo::default();
    elo.game("w", "l"); // w 1016, l 984
    elo.touched.extend(["w".to_string(), "l".to_string()]);
    elo.record("m1", 1); // 1016
    elo.record("m2", 1); // 1016
    elo.record("l2", -1); // 984
    elo.apply(&server).await;
    for (user, want) in [
        ("w", 1016),
        ("l", 984),
        ("m1", 1016),
        ("m2", 1016),
        ("l2", 984),
    ] {
        assert_eq!(elo.score(user), want, "the scenario's arithmetic");
    }

    // Listing order gl, gw, gm2, gm1, gl2; gm1 was created before gm2 but
    // listed after it.
    let gl = server.listed_game("chess", "l").await;
    let gw = server.listed_game("chess", "w").await;
    let gm1 = created_game(&server, "chess", "m1").await;
    let gm2 = created_game(&server, "chess", "m2").await;
    list(&server, "chess", &gm2).await;
    list(&server, "chess", &gm1).await;
    let gl2 = server.listed_game("chess", "l2").await;
    assert_eq!(
        open_ids(&server, "chess").await,
        ids(&[&gl, &gw, &gm2, &gm1, &gl2])
    );

    // Unrated players (1000) are 16 from every creator.
    let expect = [
        ("q1", &gl, vec!["l", "q1"]),
        ("q2", &gl, vec!["l", "q1", "q2"]),
        // gw (above) is older than gl2 (below).
        ("q3", &gw, vec!["w", "q3"]),
        ("q4", &gw, vec!["w", "q3", "q4"]),
        // The oldest listing, not the oldest game.
        ("q5", &gm2, vec!["m2", "q5"]),
        ("q6", &gm2, vec!["m2", "q5", "q6"]),
        ("q7", &gm1, vec!["m1", "q7"]),
        ("q8", &gm1, vec!["m1", "q7", "q8"]),
        ("q9", &gl2, vec!["l2", "q9"]),
    ];
    for (user, game, players) in &expect {
        let r = quick(&server, "chess", user).await;
        assert_joined(&fake, "chess", &r, game, players);
    }
    assert_eq!(open_ids(&server, "chess").await, ids(&[&gl2]));
    let want: Vec<_> = expect.iter().map(|(u, g, _)| pair(g, u)).collect();
    assert_eq!(pairs(&fake, "join_game"), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn elo_rating_gap_and_current_scores() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        extra: "[quick_match]\nmax_rating_gap = 50\n".into(),
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    let mut elo = Elo::default();
    elo.record("ca", 4); // 1060
    elo.record("cc", -4); // 940
    elo.record("pa", 8); // 1110
    elo.record("pb", 9); // 1121
    elo.record("pc", -8); // 890
    elo.record("pd", -9); // 879
    elo.apply(&server).await;
    for (user, want) in [
        ("ca", 1060),
        ("cc", 940),
        ("pa", 1110),
        ("pb", 1121),
        ("pc", 890),
        ("pd", 879),
    ] {
        assert_eq!(elo.score(user), want, "the scenario's arithmetic");
    }
    let ga = server.listed_game("chess", "ca").await;
    let gc = server.listed_game("chess", "cc").await;
    let gu = server.listed_game("chess", "cu").await; // unrated: 1000

    // Exactly the gap away: joined.
    let r = quick(&server, "chess", "pa").await;
    assert_joined(&fake, "chess", &r, &ga, &["ca", "pa"]);
    let r = quick(&server, "chess", "pc").await;
    assert_joined(&fake, "chess", &r, &gc, &["cc", "pc"]);
    // Beyond it (61 from ca, 121 from cu; 61 from cc): a new game although
    // games with free seats are listed.
    let r = quick(&server, "chess", "pb").await;
    assert_created(&fake, "chess", &r, "pb");
    let r = quick(&server, "chess", "pd").await;
    assert_created(&fake, "chess", &r, "pd");
    assert_eq!(open_ids(&server, "chess").await, ids(&[&ga, &gc, &gu]));

    // The creator's current score counts: cu gets on the board after
    // listing (1110), and is now 11 from pb.
    elo.record("cu", 8);
    elo.apply(&server).await;
    assert_eq!(elo.score("cu"), 1110);
    let r = quick(&server, "chess", "pb").await;
    assert_joined(&fake, "chess", &r, &gu, &["cu", "pb"]);
    // An unrated player (1000) is 60 from ca and cc, 110 from cu.
    let r = quick(&server, "chess", "pe").await;
    assert_created(&fake, "chess", &r, "pe");
    // cc drops to 927: now 48 from pd (879).
    elo.record("cc", -1);
    elo.apply(&server).await;
    assert_eq!(elo.score("cc"), 927);
    let r = quick(&server, "chess", "pd").await;
    assert_joined(&fake, "chess", &r, &gc, &["cc", "pc", "pd"]);
    assert_eq!(open_ids(&server, "chess").await, ids(&[&ga, &gu]));
    assert_eq!(
        pairs(&fake, "join_game"),
        [
            pair(&ga, "pa"),
            pair(&gc, "pc"),
            pair(&gu, "pb"),
            pair(&gc, "pd")
        ]
    );
}

// ---- wins products ----

#[tokio::test(flavor = "multi_thread")]
async fn wins_quick_join_takes_the_oldest_listing_and_skips_own_games() {
    let (fake, server) = setup().await;
    // Scores do not matter for a wins product: p and c3 both have 5.
    let mut events = Vec::new();
    for i in 0..5 {
        for user in ["p", "c3"] {
            events.push(
                json!({"product_id": "exrps", "game_id": format!("w-{user}-{i}"),
                "type": "game_over", "winner_id": user, "loser_id": format!("loser-{user}-{i}")}),
            );
        }
    }
    let (status, body) = server.ingest("exrps-secret", &Value::Array(events)).await;
    assert_eq!(status, 200, "{body}");
    for user in ["p", "c3"] {
        wait_until(Duration::from_secs(10), "5 wins on the board", || async {
            score(&server, "exrps", user).await == Some(5)
        })
        .await;
    }

    let g1 = server.listed_game("exrps", "c1").await;
    let g2 = server.listed_game("exrps", "c2").await;
    let g3 = server.listed_game("exrps", "c3").await;
    assert_eq!(open_ids(&server, "exrps").await, ids(&[&g1, &g2, &g3]));

    // c1's own game is the oldest: passed over.
    let r = quick(&server, "exrps", "c1").await;
    assert_joined(&fake, "exrps", &r, &g2, &["c2", "c1"]);
    assert_eq!(
        open_ids(&server, "exrps").await,
        ids(&[&g1, &g3]),
        "the full game left the lobby"
    );
    // The oldest listing, whatever the scores.
    let r = quick(&server, "exrps", "p").await;
    assert_joined(&fake, "exrps", &r, &g1, &["c1", "p"]);
    assert_eq!(open_ids(&server, "exrps").await, ids(&[&g3]));
    // Only c3's own game is left: c3 gets a new one.
    let r = quick(&server, "exrps", "c3").await;
    let new_c3 = assert_created(&fake, "exrps", &r, "c3");
    assert_eq!(
        open_ids(&server, "exrps").await,
        ids(&[&g3]),
        "a created game is not listed"
    );
    let r = quick(&server, "exrps", "p2").await;
    assert_joined(&fake, "exrps", &r, &g3, &["c3", "p2"]);
    assert!(server.open_games("exrps").await.is_empty());
    // Nothing listed: created, as create_game does (state created, the
    // player its creator and only player).
    let r = quick(&server, "exrps", "p3").await;
    let new_p3 = assert_created(&fake, "exrps", &r, "p3");
    assert!(server.open_games("exrps").await.is_empty());

    assert_eq!(
        pairs(&fake, "join_game"),
        [pair(&g2, "c1"), pair(&g1, "p"), pair(&g3, "p2")]
    );
    assert_eq!(
        pairs(&fake, "create_game"),
        [
            pair(&g1, "c1"),
            pair(&g2, "c2"),
            pair(&g3, "c3"),
            pair(&new_c3, "c3"),
            pair(&new_p3, "p3"),
        ]
    );
    // The created game behaves like any other: listed once the game server
    // reports creator_joined, then quick-joinable.
    list(&server, "exrps", &new_p3).await;
    let r = quick(&server, "exrps", "p4").await;
    assert_joined(&fake, "exrps", &r, &new_p3, &["p3", "p4"]);
    // And not joinable twice.
    let (s, b) = server.join("exrps", &g1, "p").await;
    assert_error(s, &b, 409, "already_joined");
}

// ---- concurrency ----

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_quick_joins_on_ten_open_games_fill_all_ten_and_create_22() {
    let (fake, server) = setup().await;
    let mut games = Vec::new();
    for i in 0..10 {
        games.push(server.listed_game("exrps", &format!("c{i}")).await);
    }
    assert_eq!(server.open_games("exrps").await.len(), 10);
    // A slow game server keeps every request in flight at once.
    fake.set(Mode::Delay(50), Mode::Delay(50), Mode::Ok);
    let server = Arc::new(server);
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (server, barrier) = (server.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("q{i}");
            barrier.wait().await;
            let answer = quick(&server, "exrps", &user).await;
            (user, answer)
        }));
    }
    let started = Instant::now();
    let mut joined: HashMap<String, String> = HashMap::new(); // game -> joiner
    let mut created: Vec<(String, String)> = Vec::new(); // (game, creator)
    for task in tasks {
        let (user, answer) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a quick join did not finish within 30 s")
            .unwrap();
        let (status, body) = &answer;
        assert_eq!(*status, 200, "{user}: {body}");
        match body["matched"].as_str() {
            Some("joined") => {
                let game = body["game_id"].as_str().unwrap().to_string();
                let index = games
                    .iter()
                    .position(|g| *g == game)
                    .unwrap_or_else(|| panic!("{user} joined an unknown game: {body}"));
                let creator = format!("c{index}");
                assert_joined(&fake, "exrps", &answer, &game, &[&creator, &user]);
                if let Some(other) = joined.insert(game.clone(), user.clone()) {
                    panic!("{game} given to both {other} and {user}");
                }
            }
            Some("created") => {
                let id = assert_created(&fake, "exrps", &answer, &user);
                created.push((id, user));
            }
            _ => panic!("{user}: no matched field: {body}"),
        }
    }
    eprintln!("32 quick joins answered in {:?}", started.elapsed());
    assert_eq!(
        joined.len(),
        10,
        "every open game filled once; joined: {joined:?}"
    );
    assert_eq!(created.len(), 22, "the rest created games");

    // The game server saw exactly the 10 joins.
    let want: HashSet<(String, String)> =
        joined.iter().map(|(g, u)| (g.clone(), u.clone())).collect();
    let calls = pairs(&fake, "join_game");
    assert_eq!(calls.len(), 10, "{calls:?}");
    assert_eq!(calls.into_iter().collect::<HashSet<_>>(), want);
    // And 10 + 22 creations, the new ones exactly the created answers.
    let creates = pairs(&fake, "create_game");
    assert_eq!(creates.len(), 32, "{creates:?}");
    let new: HashSet<(String, String)> = creates.into_iter().skip(10).collect();
    assert_eq!(new, created.iter().cloned().collect::<HashSet<_>>());
    assert!(fake.calls("remove_player").is_empty());

    // No game over-filled: each of the 10 is full with its creator and one
    // joiner, and gone from the lobby; the created ones are not listed.
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    assert!(server.open_games("exrps").await.is_empty());
    for (i, game) in games.iter().enumerate() {
        let (s, b) = server.join("exrps", game, "outsider").await;
        assert_error(s, &b, 409, "game_not_joinable");
        let (s, b) = server.join("exrps", game, &joined[game]).await;
        assert_error(s, &b, 409, "already_joined");
        let (s, b) = server.join("exrps", game, &format!("c{i}")).await;
        assert_error(s, &b, 409, "already_joined");
    }
    assert_eq!(fake.calls("join_game").len(), 10);
}

// ---- game-server failures ----

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_join_releases_the_seat_and_answers_502() {
    let (fake, server) = setup().await;
    let game = server.listed_game("exrps", "1").await;

    fake.set(Mode::Ok, Mode::Fail, Mode::Ok);
    let (s, b) = quick(&server, "exrps", "2").await;
    assert_error(s, &b, 502, "game_server_error");
    assert_eq!(pairs(&fake, "join_game"), [pair(&game, "2")]);
    assert_eq!(
        listed_players(&server, "exrps", &game).await,
        Some(json!(["1"])),
        "seat released: listed again with only its creator"
    );
    assert_eq!(
        fake.calls("create_game").len(),
        1,
        "a refused join is a 502, not a new game"
    );

    // No answer within game_server_timeout_ms (1 s): released as well, and
    // remove_player sent in case the game server did add the player.
    fake.set(Mode::Ok, Mode::Hang, Mode::Ok);
    let sent = Instant::now();
    let (s, b) = quick(&server, "exrps", "2").await;
    assert_error(s, &b, 502, "game_server_error");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(calls_for(&fake, "join_game", &game, "2"), 2);
    wait_until(Duration::from_secs(5), "remove_player sent", || async {
        calls_for(&fake, "remove_player", &game, "2") == 1
    })
    .await;
    assert_eq!(
        listed_players(&server, "exrps", &game).await,
        Some(json!(["1"]))
    );
    assert_eq!(fake.calls("create_game").len(), 1);

    // With the game server answering again, the same player gets the seat.
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    let r = quick(&server, "exrps", "2").await;
    assert_joined(&fake, "exrps", &r, &game, &["1", "2"]);
    assert!(server.open_games("exrps").await.is_empty());
    assert_eq!(calls_for(&fake, "join_game", &game, "2"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_create_after_no_candidate_is_502_and_stores_nothing() {
    let (fake, server) = setup().await;
    fake.set(Mode::Fail, Mode::Ok, Mode::Ok);
    let (s, b) = quick(&server, "exrps", "1").await;
    assert_error(s, &b, 502, "game_server_error");
    let calls = fake.calls("create_game");
    assert_eq!(calls.len(), 1);
    let id = calls[0]["gameId"].as_str().unwrap().to_string();
    // Nothing was stored: the game server's report for it is ignored.
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    server.state_change("exrps", &id, "creator_joined").await;
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_error(s, &b, 404, "game_not_found");
    assert!(server.open_games("exrps").await.is_empty());
}

// ---- a client that gives up ----

/// Sends a quick join for `user` from a client that gives up after 100 ms,
/// and asserts that it did give up.
async fn abandoned_quick_join(server: &Server, product: &str, user: &str) -> Instant {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let sent = Instant::now();
    let result = client
        .post(server.url(&quick_path(product)))
        .header("authorization", token(user))
        .send()
        .await;
    match result {
        Err(e) => assert!(e.is_timeout(), "expected a client timeout, got {e}"),
        Ok(r) => panic!(
            "the quick join was answered ({}) before the client gave up",
            r.status()
        ),
    }
    sent
}

/// Sleeps until `ms` after `sent`.
async fn sleep_until(sent: Instant, ms: u64) {
    tokio::time::sleep(
        (sent + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
    )
    .await;
}

/// Whether the seat of `joiner` in the full two-player `game` is held: the
/// game is not listed, a third player cannot join and the joiner is in it.
async fn seat_held(server: &Server, game: &str, joiner: &str, third: &str) -> bool {
    if listed(server, "exrps", game).await.is_some() {
        return false;
    }
    let (s, b) = server.join("exrps", game, third).await;
    if s != 409 || b["error"] != "game_not_joinable" {
        return false;
    }
    let (s, b) = server.join("exrps", game, joiner).await;
    s == 409 && b["error"] == "already_joined"
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_quick_join_with_a_slow_game_server_keeps_the_accepted_join() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        timeout_ms: 5000,
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    let game = server.listed_game("exrps", "1").await;
    // The game server takes 2 s, then accepts: the player is in the game
    // although the client left after 0.1 s.
    fake.set(Mode::Ok, Mode::Delay(2000), Mode::Ok);
    let sent = abandoned_quick_join(&server, "exrps", "2").await;
    wait_until(
        Duration::from_secs(5),
        "the game server is asked",
        || async { calls_for(&fake, "join_game", &game, "2") > 0 },
    )
    .await;
    sleep_until(sent, 2300).await;
    wait_until(Duration::from_secs(10), "the accepted join is kept", || {
        seat_held(&server, &game, "2", "3")
    })
    .await;
    assert_eq!(calls_for(&fake, "join_game", &game, "2"), 1);
    assert_eq!(
        calls_for(&fake, "remove_player", &game, "2"),
        0,
        "the game server accepted the player; nothing removes them"
    );
    assert_eq!(calls_for(&fake, "join_game", &game, "3"), 0);
    assert_eq!(
        fake.calls("create_game").len(),
        1,
        "the abandoned quick join joined, it did not create"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_quick_join_past_the_game_server_timeout_releases_the_seat() {
    let fake = FakeGameServer::start().await;
    let server = Server::start(&Options::new(&fake)).await; // 1 s timeout
    let game = server.listed_game("exrps", "1").await;
    fake.set(Mode::Ok, Mode::Hang, Mode::Ok);
    let sent = abandoned_quick_join(&server, "exrps", "2").await;
    wait_until(
        Duration::from_secs(5),
        "the game server is asked",
        || async { calls_for(&fake, "join_game", &game, "2") > 0 },
    )
    .await;
    sleep_until(sent, 1200).await;
    wait_until(
        Duration::from_secs(10),
        "seat released and remove_player sent",
        || async {
            calls_for(&fake, "remove_player", &game, "2") >= 1
                && listed_players(&server, "exrps", &game).await == Some(json!(["1"]))
        },
    )
    .await;
    // Settled: it stays that way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        listed_players(&server, "exrps", &game).await,
        Some(json!(["1"]))
    );
    assert_eq!(calls_for(&fake, "join_game", &game, "2"), 1);
    assert_eq!(fake.calls("create_game").len(), 1);
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    let r = quick(&server, "exrps", "3").await;
    assert_joined(&fake, "exrps", &r, &game, &["1", "3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_quick_join_that_creates_still_stores_the_game() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        timeout_ms: 5000,
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    fake.set(Mode::Delay(1000), Mode::Ok, Mode::Ok);
    let sent = abandoned_quick_join(&server, "exrps", "1").await;
    wait_until(Duration::from_secs(5), "create_game is sent", || async {
        !fake.calls("create_game").is_empty()
    })
    .await;
    let calls = fake.calls("create_game");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["userId"], "1");
    let id = calls[0]["gameId"].as_str().unwrap().to_string();
    sleep_until(sent, 1100).await;
    // The game server created it, so the matchmaker stores it: a join
    // finds it (still `created`, so not joinable yet).
    wait_until(Duration::from_secs(10), "the game is stored", || async {
        let (s, b) = server.join("exrps", &id, "2").await;
        s == 409 && b["error"] == "game_not_joinable"
    })
    .await;
    list(&server, "exrps", &id).await;
    assert_eq!(
        listed_players(&server, "exrps", &id).await,
        Some(json!(["1"]))
    );
    let r = quick(&server, "exrps", "2").await;
    assert_joined(&fake, "exrps", &r, &id, &["1", "2"]);
}

// ---- errors ----

#[tokio::test(flavor = "multi_thread")]
async fn quick_join_errors() {
    let (fake, server) = setup().await;
    let path = quick_path("exrps");
    for auth in [None, Some("Token garbage"), Some("Token")] {
        let (s, b) = server.post(&path, auth, "").await;
        assert_error(s, &b, 401, "unauthorized");
    }
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"user_id": "1", "username": "user1", "exp": 1000}),
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap();
    let expired = format!("Token {expired}");
    let (s, b) = server.post(&path, Some(&expired), "").await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = quick(&server, "nope", "1").await;
    assert_error(s, &b, 404, "unknown_product");
    // A wrong method is a JSON 405.
    let (s, b) = server.get(&path).await;
    assert_eq!(s, 405, "{b}");
    assert!(b["error"].is_string(), "{b}");
    // Over 1 MiB: 413 (a client of its own: the server may close it).
    let r = reqwest::Client::new()
        .post(server.url(&path))
        .header("authorization", token("1"))
        .body("x".repeat((1 << 20) + 1))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_error(s, &b, 413, "payload_too_large");
    for endpoint in ["create_game", "join_game", "remove_player", "remove_game"] {
        assert_eq!(fake.call_count(endpoint), 0, "{endpoint}");
    }
    // Nothing was created or listed by the refused requests.
    assert!(server.open_games("exrps").await.is_empty());
    // Bearer works as well as Token.
    let bearer = format!(
        "Bearer {}",
        common::mint_token(common::SECRET, "7", "user7", 3600)
    );
    let (s, b) = server.post(&path, Some(&bearer), "").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["matched"], "created", "{b}");
    assert_eq!(b["creator_id"], "7", "{b}");
}
