//! The leader-epoch cache: for each leader epoch that wrote to the log, the
//! offset of its first batch. Answers OffsetForLeaderEpoch.
//!
//! Kept in `leader-epoch-checkpoint`: a version line `0`, a count line, then
//! one `epoch start_offset` line per entry. Rewritten whenever it changes
//! (new epoch, truncation, log start moving); rebuilt from the batch headers
//! if the file is missing or unreadable.

use std::path::Path;

use crate::checkpoint;
use crate::error::StorageError;

pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
/// "No epoch" / "no offset" in OffsetForLeaderEpoch.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;
const VERSION: &str = "0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Entries with strictly increasing epochs and start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Records that `epoch` wrote a batch at `start_offset`. Returns whether
    /// the cache changed. Epochs not above the latest are ignored, as Kafka
    /// does: a leader's epoch only grows.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(latest) = self.entries.last() {
            if epoch <= latest.epoch {
                return false;
            }
            if start_offset < latest.start_offset {
                // Only a log whose offsets go backwards could ask this.
                tracing::warn!(
                    epoch,
                    start_offset,
                    ?latest,
                    "leader epoch starting before the latest one ignored"
                );
                return false;
            }
            if start_offset == latest.start_offset {
                // The latest epoch has nothing left in the log.
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Forgets epochs that start at or after `end_offset` (log truncation).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Forgets epochs wholly below `start_offset`; the epoch that was
    /// current at `start_offset` now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self
            .entries
            .partition_point(|entry| entry.start_offset <= start_offset);
        let mut changed = false;
        if covering > 1 {
            self.entries.drain(..covering - 1);
            changed = true;
        }
        if let Some(first) = self.entries.first_mut() {
            if first.start_offset < start_offset {
                first.start_offset = start_offset;
                changed = true;
            }
        }
        changed
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and
    /// the offset where the next larger epoch starts (or `log_end_offset`
    /// for the latest epoch). A request below the first known epoch gets
    /// the requested epoch and the first epoch's start; one above the latest
    /// epoch, or an empty cache, gets (-1, -1).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        let Some(latest) = self.entries.last() else {
            return undefined;
        };
        if requested == UNDEFINED_EPOCH || requested > latest.epoch {
            return undefined;
        }
        if requested == latest.epoch {
            return (latest.epoch, log_end_offset);
        }
        let higher = self
            .entries
            .partition_point(|entry| entry.epoch <= requested);
        let next_start = self.entries[higher].start_offset;
        match higher.checked_sub(1) {
            Some(floor) => (self.entries[floor].epoch, next_start),
            None => (requested, next_start),
        }
    }

    pub fn encode(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        text
    }

    /// Parses the file format; `None` if anything is off.
    pub fn decode(text: &str) -> Option<LeaderEpochCache> {
        let mut lines = text.lines();
        if lines.next()? != VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = LeaderEpochCache::default();
        for line in lines.by_ref().take(count) {
            let (epoch, start_offset) = line.trim().split_once(' ')?;
            let entry = EpochEntry {
                epoch: epoch.parse().ok()?,
                start_offset: start_offset.parse().ok()?,
            };
            let ordered = cache.entries.last().is_none_or(|last| {
                entry.epoch > last.epoch && entry.start_offset > last.start_offset
            });
            if entry.epoch < 0 || entry.start_offset < 0 || !ordered {
                return None;
            }
            cache.entries.push(entry);
        }
        (cache.entries.len() == count && lines.next().is_none()).then_some(cache)
    }

    pub fn load(dir: &Path) -> Result<Option<LeaderEpochCache>, StorageError> {
        let Some(text) = checkpoint::read_small_file(dir, LEADER_EPOCH_FILE)? else {
            return Ok(None);
        };
        let cache = LeaderEpochCache::decode(&text);
        if cache.is_none() {
            tracing::warn!(dir = %dir.display(), "unreadable leader-epoch-checkpoint, rebuilding it");
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for &(epoch, start_offset) in entries {
            assert!(cache.assign(epoch, start_offset));
        }
        cache
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let cache = cache(&[(1, 0), (3, 10), (4, 25)]);
        let log_end_offset = 40;
        assert_eq!(cache.end_offset_for(4, log_end_offset), (4, 40));
        assert_eq!(cache.end_offset_for(3, log_end_offset), (3, 25));
        assert_eq!(
            cache.end_offset_for(2, log_end_offset),
            (1, 10),
            "largest epoch at or below"
        );
        assert_eq!(cache.end_offset_for(1, log_end_offset), (1, 10));
        assert_eq!(
            cache.end_offset_for(0, log_end_offset),
            (0, 0),
            "below the first epoch"
        );
        assert_eq!(cache.end_offset_for(5, log_end_offset), (-1, -1));
        assert_eq!(cache.end_offset_for(-1, log_end_offset), (-1, -1));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 0), (-1, -1));
    }

    #[test]
    fn assign_ignores_old_epochs() {
        let mut cache = cache(&[(2, 0)]);
        assert!(!cache.assign(2, 5));
        assert!(!cache.assign(1, 6));
        assert!(!cache.assign(-1, 6));
        assert!(cache.assign(3, 7));
        assert_eq!(cache.entries().len(), 2);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut both = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(both.truncate_from_end(25));
        assert_eq!(both.entries(), cache(&[(1, 0), (3, 10)]).entries());
        assert!(!both.truncate_from_end(100));

        let mut start = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(start.truncate_from_start(12));
        assert_eq!(
            start.entries(),
            &[
                EpochEntry {
                    epoch: 3,
                    start_offset: 12
                },
                EpochEntry {
                    epoch: 4,
                    start_offset: 25
                }
            ]
        );
        assert!(!start.truncate_from_start(12));
        assert!(start.truncate_from_start(25));
        assert_eq!(
            start.entries(),
            &[EpochEntry {
                epoch: 4,
                start_offset: 25
            }]
        );
        assert!(start.truncate_from_start(30));
        assert_eq!(
            start.entries(),
            &[EpochEntry {
                epoch: 4,
                start_offset: 30
            }]
        );
    }

    #[test]
    fn file_format_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), None);
        let original = cache(&[(0, 0), (7, 100)]);
        checkpoint::write_atomically(dir.path(), LEADER_EPOCH_FILE, original.encode().as_bytes())
            .unwrap();
        assert_eq!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            Some(original.clone())
        );
        assert_eq!(original.encode(), "0\n2\n0 0\n7 100\n");

        for garbage in [
            "",
            "0\n",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 1\n",
            "0\n2\n5 0\n4 10\n",
            "0\n1\n-3 0\n",
            "0\n1\nx y\n",
        ] {
            assert_eq!(LeaderEpochCache::decode(garbage), None, "{garbage:?}");
        }
        assert_eq!(
            LeaderEpochCache::decode("0\n0\n"),
            Some(LeaderEpochCache::default())
        );
    }
}
