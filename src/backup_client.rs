//! `varcade backup`: the client of `POST /admin/backup`. It streams the
//! body to `FILE.partial` beside FILE, checks the whole file (magic, every record,
//! the trailer's count and checksum), and only then renames it to FILE, so
//! FILE is either a complete backup or untouched.

use std::path::Path;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::storage::sled::backup::{self, Trailer};

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupClientError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the service answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the download is not a complete backup: {0}")]
    Invalid(#[from] backup::BackupError),
}

/// Downloads a backup of the service at `base` into `to`.
pub async fn download(
    base: &str,
    admin_key: &str,
    to: &Path,
) -> Result<Trailer, BackupClientError> {
    let url = format!("{}/admin/backup", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(admin_key)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(BackupClientError::Refused {
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        });
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let file_error = |source| BackupClientError::File {
        path: partial.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(file_error)?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e.into());
            }
        };
        if let Err(e) = file.write_all(&chunk).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(file_error(e));
        }
    }
    file.sync_all().await.map_err(file_error)?;
    drop(file);
    let check = partial.clone();
    let checked = tokio::task::spawn_blocking(move || backup::verify(&check))
        .await
        .map_err(|e| BackupClientError::File {
            path: partial.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    let trailer = match checked {
        Ok(trailer) => trailer,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.into());
        }
    };
    tokio::fs::rename(&partial, to)
        .await
        .map_err(|source| BackupClientError::File {
            path: to.display().to_string(),
            source,
        })?;
    Ok(trailer)
}
