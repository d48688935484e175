//! The log's tail in memory: the batches a leader appended that its
//! followers have not all written yet, as they went into the file (the
//! header as stamped, the records as they arrived), so that followers
//! fetching at the tail are answered without reading the file back.
//!
//! The one rule: every batch held here is byte for byte what the log holds
//! at its offsets. Appends as a leader add to it; the high watermark (below
//! it, every in-sync follower has the batches) trims it; anything else that
//! changes the log's tail (a follower's append, truncation, a reset,
//! cleaning) empties it. Reads that find nothing here go to the file.
//!
//! Memory: at most [`TAIL_MAX_BYTES`] a partition and
//! [`TAIL_TOTAL_MAX_BYTES`] in the process. When full, new batches are not
//! kept (and followers read them from the file), rather than dropping the
//! oldest ones, which are what followers need next. The records are
//! `Bytes` shared with the produce request they arrived in, which they keep
//! alive until the followers have them (normally one fetch round trip).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use protocol::batch::BATCH_HEADER_BYTES;

use crate::segment::PreparedBatch;

/// The most one partition keeps: more than a producer has in flight on
/// one connection (16 outstanding requests of 1 MB, see the broker's
/// `RESPONSES_QUEUED_MAX`) while it waits for acks=all.
pub const TAIL_MAX_BYTES: usize = 32 * 1024 * 1024;
/// The most all partitions keep together; beyond it a partition's new
/// batches are not kept (its followers read them from the file).
pub const TAIL_TOTAL_MAX_BYTES: usize = 256 * 1024 * 1024;

/// Bytes held by all tails of the process.
static TOTAL_BYTES: AtomicUsize = AtomicUsize::new(0);

/// One batch: its header as written (kept inline, so that appends
/// allocate nothing; only a follower's read copies it out), and its
/// records.
#[derive(Debug)]
struct Held {
    base_offset: i64,
    next_offset: i64,
    header: [u8; BATCH_HEADER_BYTES],
    records: Bytes,
}

impl Held {
    fn len(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        TOTAL_BYTES.fetch_sub(self.len(), Ordering::Relaxed);
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Tail {
    /// In offset order; where one does not start where the one before
    /// ends, batches between were not kept.
    batches: VecDeque<Held>,
    bytes: usize,
}

impl Tail {
    /// Keeps batches just written at the log's end, unless the bounds are
    /// reached. (A batch below the end of those held, which only a log
    /// changed without [`Self::clear`] could give, empties the tail first.)
    pub fn push(&mut self, written: &[PreparedBatch]) {
        for batch in written {
            let base_offset = batch.header.base_offset;
            if self.end().is_some_and(|end| base_offset < end) {
                debug_assert!(false, "a batch at {base_offset} below the tail's end");
                self.clear();
            }
            let len = BATCH_HEADER_BYTES + batch.records.len();
            if self.bytes + len > TAIL_MAX_BYTES {
                continue;
            }
            if TOTAL_BYTES.fetch_add(len, Ordering::Relaxed) + len > TAIL_TOTAL_MAX_BYTES {
                TOTAL_BYTES.fetch_sub(len, Ordering::Relaxed);
                continue;
            }
            self.bytes += len;
            self.batches.push_back(Held {
                base_offset,
                next_offset: batch.header.next_offset(),
                header: batch.header_bytes,
                records: batch.records.clone(),
            });
        }
    }

    /// Drops the batches that end at or before `offset`.
    pub fn trim_below(&mut self, offset: i64) {
        while self
            .batches
            .front()
            .is_some_and(|held| held.next_offset <= offset)
        {
            self.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some(held) = self.batches.pop_front() {
            self.bytes -= held.len();
        }
    }

    fn end(&self) -> Option<i64> {
        self.batches.back().map(|held| held.next_offset)
    }

    /// Whole batches from the one holding `offset`, as the file read gives
    /// them (at most `max_bytes`, but at least one batch if
    /// `min_one_batch`; none starting at or after `max_offset`), up to the
    /// first batch not held, in pieces: each batch's header, then its
    /// records. `None` if the batch holding `offset` is not held here.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Option<Vec<Bytes>> {
        let start = self
            .batches
            .partition_point(|held| held.next_offset <= offset);
        let first = self.batches.get(start)?;
        if offset < first.base_offset {
            return None;
        }
        let mut pieces = Vec::new();
        let mut total = 0usize;
        let mut expected = first.base_offset;
        for held in self.batches.range(start..) {
            if held.base_offset >= max_offset || held.base_offset != expected {
                break;
            }
            expected = held.next_offset;
            let len = held.len();
            if total + len > max_bytes && !(pieces.is_empty() && min_one_batch) {
                break;
            }
            total += len;
            pieces.push(Bytes::copy_from_slice(&held.header));
            pieces.push(held.records.clone());
        }
        Some(pieces)
    }

    /// Bytes held by all tails of the process.
    pub fn total_bytes() -> usize {
        TOTAL_BYTES.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_batches::batch_bytes;
    use protocol::batch::{set_base_offset, BatchHeader, BATCH_HEADER_BYTES};

    fn prepared(base_offset: i64, records: usize) -> PreparedBatch {
        let bytes = batch_bytes(records, 10, 0);
        let mut header_bytes: [u8; BATCH_HEADER_BYTES] =
            bytes[..BATCH_HEADER_BYTES].try_into().unwrap();
        set_base_offset(&mut header_bytes, base_offset);
        PreparedBatch {
            header_bytes,
            header: BatchHeader::parse(&header_bytes).unwrap(),
            records: bytes.slice(BATCH_HEADER_BYTES..),
        }
    }

    fn joined(pieces: &[Bytes]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|piece| piece.iter().copied())
            .collect()
    }

    #[test]
    fn reads_whole_batches_from_the_one_holding_the_offset() {
        let mut tail = Tail::default();
        let batches = [prepared(10, 3), prepared(13, 2), prepared(15, 4)];
        tail.push(&batches);
        let whole = |b: &PreparedBatch| {
            let mut bytes = b.header_bytes.to_vec();
            bytes.extend_from_slice(&b.records);
            bytes
        };
        let all: Vec<u8> = batches.iter().flat_map(whole).collect();
        assert_eq!(
            joined(&tail.read(10, usize::MAX, i64::MAX, false).unwrap()),
            all
        );
        // Inside the second batch: from its start.
        let from_second: Vec<u8> = batches[1..].iter().flat_map(whole).collect();
        assert_eq!(
            joined(&tail.read(14, usize::MAX, i64::MAX, false).unwrap()),
            from_second
        );
        // Not held: before the first, at or after the end.
        assert!(tail.read(9, usize::MAX, i64::MAX, false).is_none());
        assert!(tail.read(19, usize::MAX, i64::MAX, false).is_none());
        // max_offset: nothing starting at or after it.
        assert_eq!(
            joined(&tail.read(10, usize::MAX, 13, false).unwrap()),
            whole(&batches[0])
        );
        // max_bytes: whole batches only, one at least if asked.
        let first = whole(&batches[0]).len();
        assert_eq!(
            joined(&tail.read(10, first + 1, i64::MAX, false).unwrap()),
            whole(&batches[0])
        );
        assert!(tail
            .read(10, first - 1, i64::MAX, false)
            .unwrap()
            .is_empty());
        assert_eq!(
            joined(&tail.read(10, 1, i64::MAX, true).unwrap()),
            whole(&batches[0])
        );
    }

    #[test]
    fn trims_below_an_offset_and_reads_stop_at_a_gap() {
        let mut tail = Tail::default();
        tail.push(&[prepared(0, 5), prepared(5, 5)]);
        tail.trim_below(5);
        assert!(tail.read(4, usize::MAX, i64::MAX, false).is_none());
        assert_eq!(tail.read(5, usize::MAX, i64::MAX, false).unwrap().len(), 2);
        // Offsets 10-19 not held: a read stops before them, and one in
        // them goes to the file.
        tail.push(&[prepared(20, 1)]);
        assert_eq!(tail.read(5, usize::MAX, i64::MAX, false).unwrap().len(), 2);
        assert!(tail.read(12, usize::MAX, i64::MAX, false).is_none());
        assert_eq!(tail.read(20, usize::MAX, i64::MAX, false).unwrap().len(), 2);
        tail.clear();
        assert!(tail.read(20, usize::MAX, i64::MAX, false).is_none());
    }

    #[test]
    fn keeps_the_oldest_batches_when_full() {
        let mut tail = Tail::default();
        let one = prepared(0, 1000);
        let per_batch = one.header_bytes.len() + one.records.len();
        let fit = (TAIL_MAX_BYTES / per_batch) as i64;
        for next in 0..fit + 10 {
            tail.push(&[prepared(next * 1000, 1000)]);
        }
        assert!(tail.bytes <= TAIL_MAX_BYTES);
        assert!(tail.read(0, usize::MAX, i64::MAX, false).is_some());
        assert!(tail.read(fit * 1000, usize::MAX, i64::MAX, false).is_none());
        // Room again once the followers have the oldest.
        tail.trim_below(1000);
        tail.push(&[prepared((fit + 10) * 1000, 1000)]);
        assert!(tail
            .read((fit + 10) * 1000, usize::MAX, i64::MAX, false)
            .is_some());
    }
}
