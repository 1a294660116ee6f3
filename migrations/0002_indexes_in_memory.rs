//! Layout 2: indexes live only in the writer's memory, rebuilt from the
//! records at start, so a game write and a player's score change are one
//! key each. This removes the index keys layout 1 kept: in `games`, the
//! lobby order `l<product>\0<listing><game_id>` and the by-state index
//! `s<state><since><game_id>`; in `stats`, the board order
//! `r<product>\0<score><user>`. Idempotent: a second run finds nothing.

pub fn apply(db: &::sled::Db) -> ::sled::Result<()> {
    for (tree, prefixes) in [("games", &b"ls"[..]), ("stats", &b"r"[..])] {
        let tree = db.open_tree(tree)?;
        for prefix in prefixes {
            let mut batch = ::sled::Batch::default();
            for item in tree.scan_prefix([*prefix]) {
                let (key, _) = item?;
                batch.remove(key);
            }
            tree.apply_batch(batch)?;
        }
    }
    Ok(())
}
