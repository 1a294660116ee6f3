//! Quick match's second order of the lobby (API.md "Quick match"): per
//! product, the listed games by their creator's current score, so the
//! writer finds the open game closest to a player's rating by walking out
//! from it instead of scanning every open game.
//!
//! The writer keeps it in step with the lobby (the listing changes `Games`
//! records) and with the boards (a stats batch's score changes re-key that
//! creator's listed games).

use std::collections::{BTreeSet, HashMap, HashSet};

/// A listing that entered or left the lobby, as `Games` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingChange {
    Listed {
        product: String,
        game_id: String,
        creator: String,
        listing: u64,
    },
    Unlisted {
        product: String,
        game_id: String,
    },
}

/// One product's listed games by creator score.
#[derive(Debug, Default)]
struct ProductRatings {
    /// (creator score, listing, game id) of creators with a score.
    order: BTreeSet<(i64, u64, String)>,
    /// (listing, game id) of creators not yet on the board.
    unrated: BTreeSet<(u64, String)>,
    /// Game id → (creator score, listing, creator).
    games: HashMap<String, (Option<i64>, u64, String)>,
    /// Creator → their listed games.
    by_creator: HashMap<String, HashSet<String>>,
    /// The season the scores are from (`None`: the lifetime board).
    season: Option<String>,
}

impl ProductRatings {
    fn insert(&mut self, game_id: &str, score: Option<i64>, listing: u64) {
        match score {
            Some(score) => self.order.insert((score, listing, game_id.to_string())),
            None => self.unrated.insert((listing, game_id.to_string())),
        };
    }

    fn remove(&mut self, game_id: &str, score: Option<i64>, listing: u64) {
        match score {
            Some(score) => self.order.remove(&(score, listing, game_id.to_string())),
            None => self.unrated.remove(&(listing, game_id.to_string())),
        };
    }
}

/// Every product's listed games by creator score.
#[derive(Debug, Default)]
pub struct Ratings(HashMap<String, ProductRatings>);

impl Ratings {
    /// Adds a listed game whose creator has `score` (`None`: not on the
    /// board yet).
    pub fn list(
        &mut self,
        product: &str,
        game_id: &str,
        creator: &str,
        listing: u64,
        score: Option<i64>,
    ) {
        self.unlist(product, game_id);
        let p = self.0.entry(product.to_string()).or_default();
        p.insert(game_id, score, listing);
        p.games
            .insert(game_id.to_string(), (score, listing, creator.to_string()));
        p.by_creator
            .entry(creator.to_string())
            .or_default()
            .insert(game_id.to_string());
    }

    /// Removes a game that left the lobby.
    pub fn unlist(&mut self, product: &str, game_id: &str) {
        let Some(p) = self.0.get_mut(product) else {
            return;
        };
        if let Some((score, listing, creator)) = p.games.remove(game_id) {
            p.remove(game_id, score, listing);
            if let Some(games) = p.by_creator.get_mut(&creator) {
                games.remove(game_id);
                if games.is_empty() {
                    p.by_creator.remove(&creator);
                }
            }
        }
    }

    /// Re-keys a creator's listed games after their score changed.
    pub fn rescore(&mut self, product: &str, creator: &str, score: Option<i64>) {
        let Some(p) = self.0.get_mut(product) else {
            return;
        };
        let Some(games) = p.by_creator.get(creator).cloned() else {
            return;
        };
        for game_id in games {
            if let Some(&(old, listing, _)) = p.games.get(&game_id) {
                p.remove(&game_id, old, listing);
                p.insert(&game_id, score, listing);
                if let Some(entry) = p.games.get_mut(&game_id) {
                    entry.0 = score;
                }
            }
        }
    }

    /// Products with listed games (or that had some).
    pub fn products(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// The season a product's scores are from (`None`: lifetime board).
    pub fn season(&self, product: &str) -> Option<&str> {
        self.0.get(product)?.season.as_deref()
    }

    /// Records which season a product's scores are from.
    pub fn set_season(&mut self, product: &str, season: Option<String>) {
        self.0.entry(product.to_string()).or_default().season = season;
    }

    /// Re-keys every listed game of a product with its creator's score
    /// from `score_of` (its current season changed).
    pub fn rescore_all<E>(
        &mut self,
        product: &str,
        mut score_of: impl FnMut(&str) -> Result<Option<i64>, E>,
    ) -> Result<(), E> {
        let creators: Vec<String> = match self.0.get(product) {
            Some(p) => p.by_creator.keys().cloned().collect(),
            None => return Ok(()),
        };
        for creator in creators {
            let score = score_of(&creator)?;
            self.rescore(product, &creator, score);
        }
        Ok(())
    }

    /// The listed game whose creator's score is closest to `score`, at most
    /// `max_gap` away, among those `fits` accepts; a creator not on the
    /// board counts as `initial`; ties go to the oldest listing. Walks out
    /// from `score` and looks only at the nearest entries that fit.
    pub fn closest(
        &self,
        product: &str,
        score: i64,
        max_gap: i64,
        initial: i64,
        fits: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let p = self.0.get(product)?;
        let low = score.saturating_sub(max_gap);
        let high = score.saturating_add(max_gap);
        let mut down = p
            .order
            .range((low, 0, String::new())..(score, 0, String::new()))
            .rev()
            .filter(|(_, _, id)| fits(id))
            .peekable();
        // Walking down meets a score's newest listing first: take every
        // fitting entry at the nearest score and keep the oldest.
        let nearest_down = down.peek().map(|(s, _, _)| *s);
        let below = nearest_down.and_then(|s| {
            down.take_while(|(t, _, _)| *t == s)
                .min_by_key(|(_, listing, _)| *listing)
        });
        let above = p
            .order
            .range((score, 0, String::new())..=(high, u64::MAX, String::new()))
            .find(|(_, _, id)| fits(id));
        let unrated = if (initial - score).abs() <= max_gap {
            p.unrated
                .iter()
                .find(|(_, id)| fits(id))
                .map(|(listing, id)| (initial, *listing, id))
        } else {
            None
        };
        [
            below.map(|(s, l, id)| (*s, *l, id)),
            above.map(|(s, l, id)| (*s, *l, id)),
            unrated,
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(s, listing, _)| ((s - score).abs(), *listing))
        .map(|(_, _, id)| id.clone())
    }

    /// Applies listing changes, scoring each new listing's creator with
    /// `score_of`.
    pub fn apply<E>(
        &mut self,
        changes: Vec<ListingChange>,
        mut score_of: impl FnMut(&str, &str) -> Result<Option<i64>, E>,
    ) -> Result<(), E> {
        for change in changes {
            match change {
                ListingChange::Listed {
                    product,
                    game_id,
                    creator,
                    listing,
                } => {
                    let score = score_of(&product, &creator)?;
                    self.list(&product, &game_id, &creator, listing, score);
                }
                ListingChange::Unlisted { product, game_id } => self.unlist(&product, &game_id),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratings(games: &[(&str, &str, u64, i64)]) -> Ratings {
        let mut r = Ratings::default();
        for (id, creator, listing, score) in games {
            r.list("p", id, creator, *listing, Some(*score));
        }
        r
    }

    #[test]
    fn the_closest_within_the_gap_then_the_oldest_listing() {
        let r = ratings(&[
            ("far", "a", 1, 1500),
            ("low", "b", 2, 950),
            ("high", "c", 3, 1050),
            ("high-older", "d", 0, 1050),
            ("near", "e", 5, 1020),
        ]);
        let all = |_: &str| true;
        assert_eq!(
            r.closest("p", 1000, 200, 1000, all).as_deref(),
            Some("near")
        );
        assert_eq!(
            r.closest("p", 1000, 200, 1000, |id| id != "near")
                .as_deref(),
            Some("high-older"),
            "950 and 1050 are as close: the oldest listing wins"
        );
        assert_eq!(
            r.closest("p", 1000, 10, 1000, all),
            None,
            "nothing within the gap"
        );
        assert_eq!(r.closest("p", 1400, 100, 1000, all).as_deref(), Some("far"));
        assert_eq!(r.closest("other", 1000, 200, 1000, all), None);
    }

    #[test]
    fn equal_scores_below_take_the_oldest_listing() {
        let r = ratings(&[
            ("new", "a", 9, 990),
            ("old", "b", 2, 990),
            ("mid", "c", 5, 990),
        ]);
        assert_eq!(
            r.closest("p", 1000, 200, 1000, |_| true).as_deref(),
            Some("old")
        );
    }

    #[test]
    fn a_creator_without_a_score_counts_as_the_initial_rating() {
        let mut r = ratings(&[("rated", "a", 5, 1100)]);
        r.list("p", "unrated", "b", 9, None);
        assert_eq!(
            r.closest("p", 1010, 200, 1000, |_| true).as_deref(),
            Some("unrated")
        );
        assert_eq!(
            r.closest("p", 1090, 200, 1000, |_| true).as_deref(),
            Some("rated")
        );
        assert_eq!(
            r.closest("p", 1300, 250, 1000, |_| true).as_deref(),
            Some("rated")
        );
        r.rescore("p", "b", Some(1300));
        assert_eq!(
            r.closest("p", 1300, 10, 1000, |_| true).as_deref(),
            Some("unrated")
        );
    }

    #[test]
    fn rescoring_and_unlisting_move_the_choice() {
        let mut r = ratings(&[("g1", "a", 1, 1000), ("g2", "b", 2, 1180)]);
        assert_eq!(
            r.closest("p", 1190, 50, 1000, |_| true).as_deref(),
            Some("g2")
        );
        r.rescore("p", "a", Some(1195));
        assert_eq!(
            r.closest("p", 1190, 50, 1000, |_| true).as_deref(),
            Some("g1")
        );
        r.unlist("p", "g1");
        assert_eq!(
            r.closest("p", 1190, 50, 1000, |_| true).as_deref(),
            Some("g2")
        );
        r.apply::<()>(
            vec![ListingChange::Unlisted {
                product: "p".into(),
                game_id: "g2".into(),
            }],
            |_, _| Ok(None),
        )
        .unwrap();
        assert_eq!(r.closest("p", 1190, 50, 1000, |_| true), None);
    }
}
