#![cfg(feature = "failpoints")]
//! Leaderboard seasons (API.md "Leaderboard seasons and around-me") against
//! the real binary built with the `failpoints` feature, whose fail point
//! `writer::append_ts_ms` sets the time the log stamps on appends: so
//! `game_over` events land on either side of a boundary without waiting for
//! one, also across `kill -9`.
//!
//! Run with `cargo test --features failpoints --test seasons`.

mod common;

use std::time::Duration;

use common::{FakeGameServer, Options, Server, assert_error, wait_until};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use varcade::domain::scoring::{Elo, Scoring};

const DAY: i64 = 86_400_000;
const WEEK: i64 = 7 * DAY;

/// Two products with seasons besides the harness's: `weekly` (elo, keep 2)
/// and `daily` (wins, keep 2).
fn options(fake: &FakeGameServer) -> Options {
    let product = |id: &str, rule: &str, period: &str| {
        format!(
            "[[games]]\nproduct_id = \"{id}\"\ngame_server_url = \"{url}\"\n\
             game_socket_url = \"127.0.0.1:9\"\ningest_key = \"{id}-secret\"\n\
             leaderboard = \"{rule}\"\nstats = \"default\"\n\
             [games.season]\nperiod = \"{period}\"\nkeep = 2\n",
            url = fake.url
        )
    };
    Options {
        extra: product("weekly", "elo", "weekly") + &product("daily", "wins", "daily"),
        ..Options::new(fake)
    }
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Monday 00:00 UTC of the week holding `ms` (1970-01-05 was a Monday).
fn monday(ms: i64) -> i64 {
    4 * DAY + (ms - 4 * DAY).div_euclid(WEEK) * WEEK
}

fn date(ms: i64) -> time::Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap()
        .date()
}

fn week_id(ms: i64) -> String {
    let (year, week, _) = date(ms).to_iso_week_date();
    format!("{year}-W{week:02}")
}

fn day_id(ms: i64) -> String {
    let d = date(ms);
    format!("{}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// Appends from now on are stamped `ms`.
async fn stamp(server: &Server, ms: i64) {
    server
        .failpoint("writer::append_ts_ms", &format!("return({ms})"))
        .await;
}

/// Ingests one `game_over`; returns its event id (durable once answered).
async fn game_over(server: &Server, product: &str, winner: &str, loser: &str) -> u64 {
    let event = json!({"product_id": product, "game_id": "g", "type": "game_over",
                       "winner_id": winner, "loser_id": loser});
    let (status, body) = server.ingest(&format!("{product}-secret"), &event).await;
    assert_eq!(status, 200, "{body}");
    body["last_id"].as_u64().unwrap()
}

/// Waits until the stats consumer has applied the log up to `id`.
async fn applied(server: &Server, id: u64) {
    wait_until(Duration::from_secs(20), "the stats consumer", || async {
        server.status().await["consumers"]["stats"]["cursor"].as_u64() >= Some(id)
    })
    .await;
}

async fn get_ok(server: &Server, path: &str) -> Value {
    let (status, body) = server.get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn entries(list: &[(&str, i64)]) -> Value {
    list.iter()
        .map(|(user, score)| json!({"user_id": user, "score": score}))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn game_overs_either_side_of_a_weekly_boundary_land_in_their_seasons_across_kill_9() {
    let fake = FakeGameServer::start().await;
    let options = options(&fake);
    let server = Server::start(&options).await;
    let boundary = monday(now_ms());
    let (last_week, this_week) = (week_id(boundary - 1), week_id(boundary));

    stamp(&server, boundary - 120_000).await;
    game_over(&server, "weekly", "a", "b").await;
    let before = game_over(&server, "weekly", "a", "b").await;
    applied(&server, before).await;

    // The first game after the boundary is durable but not applied when
    // the service is killed: the restarted consumer crosses the boundary.
    server.failpoint("consumer::stats", "return").await;
    stamp(&server, boundary + 60_000).await;
    let after = game_over(&server, "weekly", "c", "a").await;
    let server = server.crash_and_restart(&options).await;
    applied(&server, after).await;
    let seasons = get_ok(&server, "/leaderboards/weekly/seasons").await;
    assert_eq!(
        seasons,
        json!([
            {"season": this_week, "starts": rfc3339(boundary), "ends": rfc3339(boundary + WEEK),
             "players": 2, "current": true},
            {"season": last_week, "starts": rfc3339(boundary - WEEK), "ends": rfc3339(boundary),
             "players": 2, "current": false},
        ])
    );

    // Once applied, a second kill changes nothing.
    stamp(&server, boundary + 120_000).await;
    let last = game_over(&server, "weekly", "c", "b").await;
    applied(&server, last).await;
    let server = server.crash_and_restart(&options).await;
    applied(&server, last).await;

    let (w, l) = Elo.game_over(1000, 1000);
    let (a_old, b_old) = Elo.game_over(w, l);
    let (c_now, b_now) = Elo.game_over(w, 1000);
    let a_now = l;
    let current = entries(&[("c", c_now), ("b", b_now), ("a", a_now)]);
    let mut sorted = current.as_array().unwrap().clone();
    sorted.sort_by_key(|e| -e["score"].as_i64().unwrap());
    assert_eq!(
        get_ok(&server, "/leaderboards/top_ten/weekly").await,
        Value::Array(sorted.clone()),
        "elo starts again at 1000 in the new season"
    );
    assert_eq!(
        get_ok(
            &server,
            &format!("/leaderboards/top_ten/weekly?season={this_week}")
        )
        .await,
        Value::Array(sorted)
    );
    let archived = entries(&[("a", a_old), ("b", b_old)]);
    assert_eq!(
        get_ok(
            &server,
            &format!("/leaderboards/top_ten/weekly?season={last_week}")
        )
        .await,
        archived
    );
    assert_eq!(
        get_ok(
            &server,
            &format!("/leaderboards/weekly?season={last_week}&offset=1&count=5")
        )
        .await,
        entries(&[("b", b_old)])
    );
    assert_eq!(
        get_ok(
            &server,
            &format!("/leaderboards/weekly/players/a?season={last_week}")
        )
        .await,
        json!({"user_id": "a", "score": a_old, "rank": 1})
    );
    let around = get_ok(
        &server,
        &format!("/leaderboards/weekly/players/b?season={last_week}&around=1"),
    )
    .await;
    assert_eq!(around["rank"], 2);
    assert_eq!(
        around["around"],
        json!([{"user_id": "a", "score": a_old, "rank": 1},
               {"user_id": "b", "score": b_old, "rank": 2}])
    );
    assert_eq!(
        get_ok(&server, "/stats/weekly/a").await,
        json!({"games": 3, "wins": 2, "losses": 1}),
        "player stats are lifetime"
    );
    for path in [
        "/leaderboards/top_ten/weekly?season=2001-W01".to_string(),
        "/leaderboards/weekly?season=2001-W01".to_string(),
        "/leaderboards/weekly/players/a?season=2001-W01".to_string(),
        format!("/leaderboards/weekly/players/a?season={}", day_id(boundary)),
    ] {
        let (status, body) = server.get(&path).await;
        assert_error(status, &body, 404, "season_not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_holds_the_newest_archived_seasons_and_drops_the_oldest() {
    let fake = FakeGameServer::start().await;
    let options = options(&fake);
    let server = Server::start(&options).await;
    let today = now_ms().div_euclid(DAY) * DAY;
    let mut last = 0;
    for days_ago in (1..=5).rev() {
        stamp(&server, today - days_ago * DAY + 1_000).await;
        last = game_over(&server, "daily", &format!("w{days_ago}"), "l").await;
    }
    applied(&server, last).await;
    let day = |n: i64| day_id(today - n * DAY);
    let seasons = get_ok(&server, "/leaderboards/daily/seasons").await;
    let listed: Vec<(String, u64, bool)> = seasons
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["season"].as_str().unwrap().to_string(),
                s["players"].as_u64().unwrap(),
                s["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(day(0), 0, true), (day(1), 2, false), (day(2), 2, false)],
        "today's season is current (and empty) by the clock; 2 archived kept"
    );
    assert_eq!(
        get_ok(&server, "/leaderboards/top_ten/daily").await,
        json!([])
    );
    assert_eq!(
        get_ok(
            &server,
            &format!("/leaderboards/top_ten/daily?season={}", day(1))
        )
        .await,
        entries(&[("w1", 1), ("l", 0)])
    );
    for old in [3, 5] {
        let (status, body) = server
            .get(&format!("/leaderboards/top_ten/daily?season={}", day(old)))
            .await;
        assert_error(status, &body, 404, "season_not_found");
    }
    assert_eq!(
        get_ok(&server, "/stats/daily/l").await,
        json!({"games": 5, "wins": 0, "losses": 5})
    );
}
