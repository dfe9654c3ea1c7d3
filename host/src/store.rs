//! The only owner of sled. Nothing else opens or touches the database.
//!
//! For now it opens the data directory at start-up (failing early on a bad
//! path or a locked database), records each start, and flushes on shutdown.
//! Journals, snapshots and bets will live here, behind typed methods.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the database in {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::open(dir).map_err(|source| StoreError::Open {
            path: dir.display().to_string(),
            source,
        })?;
        let meta = db.open_tree("meta")?;
        let starts = meta
            .get("starts")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        meta.insert("starts", &(starts + 1).to_be_bytes())?;
        Ok(Store { db })
    }

    /// How many times this data directory has been opened, this one included.
    pub fn starts(&self) -> Result<u64, StoreError> {
        let meta = self.db.open_tree("meta")?;
        Ok(meta
            .get("starts")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Make everything written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
