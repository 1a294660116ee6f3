//! Layout 1: the trees the service uses.
//!
//! - `games`: the matchmaker's data. `g<game_id>` game records (postcard),
//!   `l<product>\0<listing u64 BE><game_id>` the lobby order,
//!   `s<state u8><since µs u64 BE><game_id>` games by state and age (curation),
//!   `c<consumer>` the matchmaker consumer's cursor.
//! - `log`: the event log. `f<first id u64 BE>` one value per ingested frame,
//!   `p<producer>` idempotent producers' last seq and id, `n` the next id.
//! - `stats`: leaderboards, player stats and the stats consumer's cursor.
//! - `meta`: the layout version and the applied migrations.

pub fn apply(db: &::sled::Db) -> ::sled::Result<()> {
    for tree in ["games", "log", "stats", "meta"] {
        db.open_tree(tree)?;
    }
    Ok(())
}
