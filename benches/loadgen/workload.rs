//! The synthetic workload: a seeded random number generator (so every run
//! sends the same data) and the texts of the events the scenarios and the
//! populate step send, as a game server would.

use std::sync::Arc;

use serde_json::json;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::PRODUCT;

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A `gameplay` event: a weapon selection in one of a million games by one
/// of 100,000 players.
pub fn gameplay(rng: &mut Rng) -> String {
    format!(
        r#"{{"product_id":"exrps","game_id":"g{}","type":"gameplay","event_name":"select_weapon","event_data":"{}","user_id":"{}"}}"#,
        rng.below(1_000_000),
        rng.below(3),
        rng.below(100_000)
    )
}

/// A `game_over` between two different players of `players` (at least 2).
pub fn game_over(rng: &mut Rng, players: u64) -> String {
    let winner = rng.below(players);
    let loser = (winner + 1 + rng.below(players - 1)) % players;
    format!(
        r#"{{"product_id":"exrps","game_id":"g{}","type":"game_over","winner_id":"{winner}","loser_id":"{loser}"}}"#,
        rng.below(1_000_000_000)
    )
}

/// A `state_change` of a game to `state`.
pub fn state_change(game_id: &str, state: &str) -> String {
    json!({"product_id": PRODUCT, "game_id": game_id, "type": "state_change", "new_state": state})
        .to_string()
}

/// `frames` WebSocket frames of `per_frame` events each (a lone event, or
/// a JSON array of them), from `event` seeded with `seed`.
pub fn frame_pool(
    seed: u64,
    frames: usize,
    per_frame: usize,
    event: impl Fn(&mut Rng) -> String,
) -> Arc<Vec<Utf8Bytes>> {
    let mut rng = Rng::new(seed);
    Arc::new(
        (0..frames)
            .map(|_| {
                let text = if per_frame == 1 {
                    event(&mut rng)
                } else {
                    let events: Vec<String> = (0..per_frame).map(|_| event(&mut rng)).collect();
                    format!("[{}]", events.join(","))
                };
                Utf8Bytes::from(text)
            })
            .collect(),
    )
}
