//! Online backup and restore of the sled backend (API.md "Operations"):
//! the file format, writing a copy of every tree, and rebuilding a data
//! directory from one.
//!
//! The copy is written by the storage writer between two groups, so it is
//! one moment of the whole database: games, log, producers, boards and
//! both cursors agree with each other. Writes wait while it is written.
//!
//! Format: the magic line `VARCADE-BACKUP 1\n`, then records, each a
//! big-endian `u32` length and a postcard [`Record`]; a zero length ends
//! them, followed by a postcard [`Trailer`] with the record count and an
//! FNV-1a checksum of every record's bytes. A file that does not end with a
//! matching trailer is refused whole.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The first bytes of every backup.
pub const MAGIC: &[u8] = b"VARCADE-BACKUP 1\n";
/// Largest record accepted when reading (a frame of events is at most a few
/// MiB).
const MAX_RECORD: u32 = 64 << 20;

/// One key of one tree.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub tree: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// The end of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub records: u64,
    pub checksum: u64,
}

/// Why a backup cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] ::sled::Error),
    #[error("not a varcade backup (it does not start with {:?})", String::from_utf8_lossy(MAGIC).trim_end())]
    NotABackup,
    #[error("the backup is damaged or incomplete: {0}")]
    Damaged(String),
}

/// FNV-1a, 64 bits: enough to tell a damaged or truncated file.
#[derive(Clone, Copy)]
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn damaged(message: impl Into<String>) -> BackupError {
    BackupError::Damaged(message.into())
}

/// Writes every tree of `db` to `out`; returns the trailer. The caller
/// makes sure nothing writes meanwhile.
pub fn write_all(db: &::sled::Db, out: impl Write) -> Result<Trailer, BackupError> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    out.write_all(MAGIC)?;
    let mut sum = Checksum::new();
    let mut records = 0u64;
    let mut bytes = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        for item in tree.iter() {
            let (key, value) = item?;
            let record = Record {
                tree: name.to_vec(),
                key: key.to_vec(),
                value: value.to_vec(),
            };
            bytes.clear();
            bytes = postcard::to_extend(&record, bytes)
                .map_err(|e| damaged(format!("encoding a record: {e}")))?;
            let len = u32::try_from(bytes.len()).map_err(|_| damaged("a record over 4 GiB"))?;
            out.write_all(&len.to_be_bytes())?;
            out.write_all(&bytes)?;
            sum.add(&bytes);
            records += 1;
        }
    }
    out.write_all(&0u32.to_be_bytes())?;
    let trailer = Trailer {
        records,
        checksum: sum.0,
    };
    let bytes = postcard::to_stdvec(&trailer).map_err(|e| damaged(e.to_string()))?;
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(trailer)
}

/// Reads a backup, handing each record to `each`, and checks its trailer.
pub fn read_all(
    input: impl Read,
    mut each: impl FnMut(Record) -> Result<(), BackupError>,
) -> Result<Trailer, BackupError> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::NotABackup)?;
    if magic != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut sum = Checksum::new();
    let mut records = 0u64;
    let mut bytes = Vec::new();
    loop {
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| damaged("it ends before its trailer"))?;
        let len = u32::from_be_bytes(len);
        if len == 0 {
            break;
        }
        if len > MAX_RECORD {
            return Err(damaged(format!("a record of {len} bytes")));
        }
        bytes.resize(len as usize, 0);
        input
            .read_exact(&mut bytes)
            .map_err(|_| damaged("it ends inside a record"))?;
        sum.add(&bytes);
        let record: Record =
            postcard::from_bytes(&bytes).map_err(|e| damaged(format!("record {records}: {e}")))?;
        each(record)?;
        records += 1;
    }
    let mut rest = Vec::new();
    input.read_to_end(&mut rest)?;
    let trailer: Trailer =
        postcard::from_bytes(&rest).map_err(|_| damaged("its trailer is unreadable"))?;
    if trailer.records != records || trailer.checksum != sum.0 {
        return Err(damaged(format!(
            "{records} records read (checksum {:x}), the trailer says {} ({:x})",
            sum.0, trailer.records, trailer.checksum
        )));
    }
    Ok(trailer)
}

/// Checks a whole backup file without writing anything.
pub fn verify(path: &Path) -> Result<Trailer, BackupError> {
    read_all(std::fs::File::open(path)?, |_| Ok(()))
}

/// Rebuilds a sled database in `dir` (which must not hold one) from a
/// backup; returns its trailer and the open database (sled releases its
/// lock only after every handle is gone, so the caller checks it with this
/// one). Every record is written before the file's trailer is checked, so
/// the caller removes `dir` on an error.
pub fn restore_into(file: &Path, dir: &Path) -> Result<(Trailer, ::sled::Db), BackupError> {
    let db = ::sled::Config::new().path(dir).open()?;
    let mut batches: Vec<(Vec<u8>, ::sled::Batch, usize)> = Vec::new();
    let flush_batch = |db: &::sled::Db, name: &[u8], batch: ::sled::Batch| {
        db.open_tree(name)?.apply_batch(batch)?;
        Ok::<(), BackupError>(())
    };
    let trailer = read_all(std::fs::File::open(file)?, |record| {
        let at = match batches.iter().position(|(t, _, _)| *t == record.tree) {
            Some(at) => at,
            None => {
                batches.push((record.tree.clone(), ::sled::Batch::default(), 0));
                batches.len() - 1
            }
        };
        let (name, batch, n) = &mut batches[at];
        batch.insert(record.key, record.value);
        *n += 1;
        if *n >= 10_000 {
            flush_batch(&db, name, std::mem::take(batch))?;
            *n = 0;
        }
        Ok(())
    })?;
    for (name, batch, _) in batches {
        flush_batch(&db, &name, batch)?;
    }
    db.flush()?;
    Ok((trailer, db))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> ::sled::Db {
        ::sled::Config::new().temporary(true).open().unwrap()
    }

    #[test]
    fn a_backup_round_trips_every_tree() {
        let source = db();
        source.insert("top", "level").unwrap();
        let games = source.open_tree("games").unwrap();
        for i in 0..25_000u32 {
            games.insert(i.to_be_bytes(), vec![7u8; 10]).unwrap();
        }
        let mut file = Vec::new();
        let trailer = write_all(&source, &mut file).unwrap();
        assert_eq!(trailer.records, 25_001);
        let dir = std::env::temp_dir().join(format!("varcade-restore-{}", uuid::Uuid::new_v4()));
        let path = dir.with_extension("backup");
        std::fs::write(&path, &file).unwrap();
        assert_eq!(verify(&path).unwrap(), trailer);
        let (restored_trailer, restored) = restore_into(&path, &dir).unwrap();
        assert_eq!(restored_trailer, trailer);
        assert_eq!(restored.open_tree("games").unwrap().len(), 25_000);
        assert_eq!(restored.get("top").unwrap().unwrap().as_ref(), b"level");
        drop(restored);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn damaged_files_are_refused() {
        let source = db();
        source.open_tree("log").unwrap().insert("k", "v").unwrap();
        let mut file = Vec::new();
        write_all(&source, &mut file).unwrap();
        let read = |bytes: &[u8]| read_all(bytes, |_| Ok(()));
        assert!(read(&file).is_ok());
        assert!(matches!(read(b"hello"), Err(BackupError::NotABackup)));
        assert!(matches!(
            read(&file[..file.len() - 3]),
            Err(BackupError::Damaged(_))
        ));
        let mut flipped = file.clone();
        let middle = MAGIC.len() + 8;
        flipped[middle] ^= 0xff;
        assert!(read(&flipped).is_err());
    }
}
