//! What matches parked in the store: dead letters and events held while
//! quarantined, each with the feed message it came from (kept in a tree of
//! its own under the same key, so records written before stay readable).

use std::collections::HashMap;

use super::{DeadLetter, Kept, Store, StoreError, dec, prefix, seq_of};

impl Store {
    /// A match's dead letters, oldest first, with their raw messages.
    pub fn dead_letters(&self, match_id: &str) -> Result<Vec<Kept<DeadLetter>>, StoreError> {
        kept(&self.dead, &self.dead_raw, match_id, |k, v| dec("dead letter", k, v))
    }

    /// A match's held events, oldest first, with their raw messages.
    pub fn held(&self, match_id: &str) -> Result<Vec<Kept<Vec<u8>>>, StoreError> {
        kept(&self.held, &self.held_raw, match_id, |_, v| Ok(v.to_vec()))
    }

    /// How many dead letters and held events each match has parked (one
    /// scan of what is parked, however many matches there are).
    pub fn parked_counts(&self) -> Result<HashMap<String, (usize, usize)>, StoreError> {
        let mut counts = HashMap::<String, (usize, usize)>::new();
        for (tree, dead) in [(&self.dead, true), (&self.held, false)] {
            for k in tree.iter().keys() {
                let k = k?;
                // `match \0 n`: the match id is all but the last 9 bytes.
                let id = k.len().checked_sub(9).map_or(&k[..0], |end| &k[..end]);
                let entry = counts.entry(String::from_utf8_lossy(id).into_owned()).or_default();
                if dead {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
        Ok(counts)
    }
}

/// A match's items of `tree`, oldest first, each with its raw message from
/// `raw` (same key) and the key's number as its id.
fn kept<T>(
    tree: &sled::Tree,
    raw: &sled::Tree,
    match_id: &str,
    item: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
) -> Result<Vec<Kept<T>>, StoreError> {
    tree.scan_prefix(prefix(match_id))
        .map(|r| {
            let (k, v) = r?;
            Ok(Kept {
                id: seq_of(&k),
                item: item(&k, &v)?,
                raw: raw.get(&k)?.map(|r| r.to_vec()),
            })
        })
        .collect()
}
