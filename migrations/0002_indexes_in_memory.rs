//! Layout 2: the lobby and by-state indexes live only in the writer's
//! memory (rebuilt from the game records at start), so each game write is
//! one key. This removes the index keys layout 1 kept in the `games` tree:
//! `l<product>\0<listing><game_id>` and `s<state><since><game_id>`.
//! Idempotent: a second run finds nothing to remove.

pub fn apply(db: &::sled::Db) -> ::sled::Result<()> {
    let games = db.open_tree("games")?;
    for prefix in [b'l', b's'] {
        let mut batch = ::sled::Batch::default();
        for item in games.scan_prefix([prefix]) {
            let (key, _) = item?;
            batch.remove(key);
        }
        games.apply_batch(batch)?;
    }
    Ok(())
}
