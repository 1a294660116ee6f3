//! Leaderboard scoring: a trait and its registered implementations.
//!
//! A product's config names its scoring (`leaderboard = "wins"`). To add a
//! rule, write one type implementing [`Scoring`] and add one line to
//! [`REGISTRY`].

use super::Registry;

/// How a finished game changes the two players' scores.
pub trait Scoring: Send + Sync {
    /// The score of a player before their first game.
    fn initial(&self) -> i64;
    /// New (winner, loser) scores from their current ones.
    fn game_over(&self, winner: i64, loser: i64) -> (i64, i64);
}

/// +1 a win; the loser keeps their score (and appears with 0 at first).
pub struct Wins;

impl Scoring for Wins {
    fn initial(&self) -> i64 {
        0
    }

    fn game_over(&self, winner: i64, loser: i64) -> (i64, i64) {
        (winner.saturating_add(1), loser)
    }
}

/// Elo rating: 1000 to start, K = 32, scores rounded to integers.
pub struct Elo;

impl Elo {
    const K: f64 = 32.0;
}

impl Scoring for Elo {
    fn initial(&self) -> i64 {
        1000
    }

    fn game_over(&self, winner: i64, loser: i64) -> (i64, i64) {
        let expected = |me: i64, other: i64| 1.0 / (1.0 + 10f64.powf((other - me) as f64 / 400.0));
        let w = winner as f64 + Elo::K * (1.0 - expected(winner, loser));
        let l = loser as f64 + Elo::K * (0.0 - expected(loser, winner));
        (w.round() as i64, l.round() as i64)
    }
}

/// Every scoring rule by name: one line each.
pub const REGISTRY: Registry<dyn Scoring> =
    Registry(&[("wins", || Box::new(Wins)), ("elo", || Box::new(Elo))]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names() {
        assert_eq!(REGISTRY.names(), ["wins", "elo"]);
        assert!(REGISTRY.make("chess").is_none());
    }

    #[test]
    fn wins_adds_one_to_the_winner() {
        assert_eq!(Wins.initial(), 0);
        assert_eq!(Wins.game_over(3, 5), (4, 5));
    }

    #[test]
    fn elo_known_cases() {
        assert_eq!(Elo.initial(), 1000);
        // Equal ratings: expected 0.5 each, K/2 = 16.
        assert_eq!(Elo.game_over(1000, 1000), (1016, 984));
        // 1200 beats 1000: expected 0.7597, gain 32 * 0.2403 = 7.69.
        assert_eq!(Elo.game_over(1200, 1000), (1208, 992));
        // 1000 beats 1200: gain 32 * 0.7597 = 24.31.
        assert_eq!(Elo.game_over(1000, 1200), (1024, 1176));
        // Second game after 1016/984: 1016 beats 984 again.
        assert_eq!(Elo.game_over(1016, 984), (1031, 969));
    }
}
