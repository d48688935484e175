//! Producer state: for each producer id that wrote to the partition, its
//! epoch, the sequence ranges and offsets of its last five batches, and its
//! open transaction, as Kafka's `ProducerStateManager` keeps them.
//!
//! - The leader checks each producer batch against it before appending
//!   ([`ProducerState::check`]): a retried batch (same epoch and sequence
//!   range as one of the last five) is a duplicate, answered with the
//!   offsets it got the first time and not written again; an older epoch is
//!   INVALID_PRODUCER_EPOCH; a sequence that does not follow the last one is
//!   OUT_OF_ORDER_SEQUENCE_NUMBER. A producer the partition has no entry for
//!   may start at any sequence (its entry may have expired).
//! - Every replica applies every batch it stores ([`ProducerState::apply`]),
//!   the leader after its checks and followers as replicated, so a new
//!   leader knows what the old one knew.
//! - Transactions: a transactional batch opens its producer's transaction
//!   in the partition (if none is open); a control batch (commit or abort
//!   marker) closes it. The first offset of the oldest open transaction is
//!   the first unstable offset (the last stable offset is that or the high
//!   watermark); aborted transactions are remembered for read_committed
//!   fetches until the log start passes them.
//!
//! Snapshots: `<offset>.snapshot` (20 digits, as segments) holds the state
//! as of that offset: written when a segment rolls and on close. Opening a
//! log loads the newest snapshot at or below its end and replays the batch
//! headers after it (control batches' first record too). Truncation does
//! the same from the newest snapshot below the new end.
//!
//! Format (big endian): magic `KPS1`, CRC-32C of the rest, u32 producer
//! count, the producers, u32 aborted-transaction count, those. Every count
//! is checked against the bytes present; a file that fails any check is
//! ignored (with a warning) and the state is rebuilt from older data.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use protocol::batch::BatchHeader;

use crate::checkpoint;
use crate::error::{IoContext, StorageError};
use crate::records::walk_records;

/// Batches remembered per producer for duplicate detection (Kafka's five
/// in-flight requests per connection).
pub const BATCHES_RETAINED: usize = 5;
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Snapshots kept: the newest few, so that a truncation or a recovery that
/// cuts below the newest still finds one.
const SNAPSHOTS_KEPT: usize = 3;
/// A snapshot larger than this is not read.
const SNAPSHOT_BYTES_MAX: u64 = 512 * 1024 * 1024;
const MAGIC: &[u8; 4] = b"KPS1";
const PRODUCER_FIXED_BYTES: usize = 8 + 2 + 8 + 4 + 8 + 1;
const ABORTED_BYTES: usize = 8 + 8 + 8 + 8;

/// One batch of a producer, as duplicate detection needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub timestamp: i64,
}

/// What the partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last [`BATCHES_RETAINED`] data batches of this epoch, oldest first.
    pub batches: VecDeque<BatchMetadata>,
    /// The max timestamp of its latest batch (data or marker).
    pub last_timestamp: i64,
    /// The coordinator epoch of its latest transaction marker (-1: none).
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction in this partition.
    pub txn_first_offset: Option<i64>,
    /// Markers applied since the state was loaded: a verification of a
    /// transaction made before a marker does not hold after it.
    pub marker_serial: u64,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            last_timestamp: -1,
            coordinator_epoch: -1,
            txn_first_offset: None,
            marker_serial: 0,
        }
    }
}

impl ProducerEntry {
    /// The sequence of its latest batch, or [`NO_SEQUENCE`].
    pub fn last_seq(&self) -> i32 {
        self.batches
            .back()
            .map_or(NO_SEQUENCE, |batch| batch.last_seq)
    }

    fn duplicate_of(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|batch| batch.first_seq == first_seq && batch.last_seq == last_seq)
            .copied()
    }

    /// A batch at `epoch`: a newer epoch forgets the older one's batches.
    fn enter_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// A transaction that ended in an abort marker: read_committed fetches
/// skip its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
    /// The last stable offset once the marker was written.
    pub last_stable_offset: i64,
}

/// A transaction marker (a control batch's one record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// What the leader does with a producer batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// A retry of a batch the log holds: answered with its offsets.
    Duplicate(BatchMetadata),
}

/// The sequence of a batch's last record: sequences wrap from `i32::MAX` to 0.
pub fn last_sequence(header: &BatchHeader) -> i32 {
    let base = header.base_sequence;
    let delta = header.last_offset_delta.max(0);
    if base > i32::MAX - delta {
        delta - (i32::MAX - base) - 1
    } else {
        base + delta
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    next as i64 == last as i64 + 1 || (next == 0 && last == i32::MAX)
}

#[derive(Debug, Default)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions in marker order (so by last offset).
    aborted: Vec<AbortedTxn>,
    /// The state reflects the log below this offset.
    end_offset: i64,
}

impl ProducerState {
    pub fn new(end_offset: i64) -> ProducerState {
        ProducerState {
            end_offset,
            ..Default::default()
        }
    }

    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty() && self.aborted.is_empty()
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Open transactions as (first offset, producer id), oldest first.
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(offset, id)| (*offset, *id))
    }

    /// Aborted transactions with records in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|txn| txn.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|txn| txn.first_offset < to)
            .copied()
            .collect()
    }

    /// Whether a transactional batch of `producer_id` at `epoch` must be
    /// verified with the transaction coordinator before it is appended (its
    /// transaction is not open in this partition yet, KIP-890): the guard to
    /// append it with once verified, or `None` when it continues an open
    /// transaction.
    pub fn verification_guard(&self, producer_id: i64, epoch: i16) -> Option<u64> {
        match self.producers.get(&producer_id) {
            Some(entry) if entry.txn_first_offset.is_some() && entry.epoch == epoch => None,
            Some(entry) => Some(entry.marker_serial),
            None => Some(0),
        }
    }

    /// Checks a producer batch the leader is about to append, given what
    /// earlier batches of the same append did (`pending`). A transactional
    /// batch that starts the producer's transaction in this partition needs
    /// `verified`: the guard of a verification with the coordinator, still
    /// valid (no marker written since).
    pub fn check(
        &self,
        pending: &HashMap<i64, ProducerEntry>,
        header: &BatchHeader,
        verified: Option<u64>,
    ) -> Result<Verdict, StorageError> {
        let producer_id = header.producer_id;
        if producer_id < 0 {
            if header.is_transactional() {
                return Err(StorageError::InvalidRecord(
                    "a transactional batch without a producer id".into(),
                ));
            }
            return Ok(Verdict::Append);
        }
        if header.base_sequence < 0 || header.producer_epoch < 0 {
            return Err(StorageError::InvalidRecord(format!(
                "invalid sequence number {} or producer epoch {} in a record batch with producerId {producer_id}",
                header.base_sequence, header.producer_epoch
            )));
        }
        let known = pending
            .get(&producer_id)
            .or_else(|| self.producers.get(&producer_id));
        if header.is_transactional() {
            let open = known.is_some_and(|entry| {
                entry.txn_first_offset.is_some() && entry.epoch == header.producer_epoch
            });
            let guard = known.map_or(0, |entry| entry.marker_serial);
            if !open && verified != Some(guard) {
                return Err(StorageError::InvalidTxnState(format!(
                    "a transactional batch of producer {producer_id} at epoch {} that its coordinator has not verified to be in an open transaction",
                    header.producer_epoch
                )));
            }
        }
        let Some(entry) = known else {
            // Unknown (new, or expired): any sequence starts it.
            return Ok(Verdict::Append);
        };
        if !header.is_transactional() && entry.txn_first_offset.is_some() {
            return Err(StorageError::InvalidTxnState(format!(
                "a non-transactional batch of producer {producer_id} while its transaction is open"
            )));
        }
        let (epoch, first_seq, last_seq) = (
            header.producer_epoch,
            header.base_sequence,
            last_sequence(header),
        );
        if epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch(format!(
                "epoch {epoch} of producer {producer_id} is older than its current epoch {}",
                entry.epoch
            )));
        }
        if let Some(duplicate) = entry.duplicate_of(epoch, first_seq, last_seq) {
            return Ok(Verdict::Duplicate(duplicate));
        }
        if epoch != entry.epoch {
            if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                return Err(StorageError::OutOfOrderSequence(format!(
                    "invalid sequence number for new epoch of producer {producer_id}: {epoch} (request epoch), {first_seq} (seq. number), {} (current producer epoch)",
                    entry.epoch
                )));
            }
        } else if entry.epoch != NO_PRODUCER_EPOCH && !in_sequence(entry.last_seq(), first_seq) {
            return Err(StorageError::OutOfOrderSequence(format!(
                "out of order sequence number for producer {producer_id} at epoch {epoch}: {first_seq} (incoming seq. number), {} (current end sequence number)",
                entry.last_seq()
            )));
        }
        Ok(Verdict::Append)
    }

    /// Checks a batch a coordinator writes for a producer (transactional
    /// offset commits): only that its epoch is not older than the current.
    pub fn check_coordinator(&self, header: &BatchHeader) -> Result<(), StorageError> {
        match self.producers.get(&header.producer_id) {
            Some(entry) if header.producer_epoch < entry.epoch => {
                Err(StorageError::InvalidProducerEpoch(format!(
                    "epoch {} of producer {} is older than its current epoch {}",
                    header.producer_epoch, header.producer_id, entry.epoch
                )))
            }
            _ => Ok(()),
        }
    }

    /// Checks a transaction marker: from the producer's current epoch or a
    /// newer one (a coordinator fencing it), and from a coordinator at
    /// least as new as the last one that wrote a marker.
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), StorageError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch(format!(
                "a transaction marker at epoch {producer_epoch} of producer {producer_id}, older than its current epoch {}",
                entry.epoch
            )));
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(StorageError::TransactionCoordinatorFenced(format!(
                "a transaction marker of producer {producer_id} from coordinator epoch {coordinator_epoch}, older than {}",
                entry.coordinator_epoch
            )));
        }
        Ok(())
    }

    /// What applying `header` would make of its producer's entry, for the
    /// next batch of the same append to be checked against.
    pub fn pending_entry(
        &self,
        pending: &HashMap<i64, ProducerEntry>,
        header: &BatchHeader,
    ) -> ProducerEntry {
        let mut entry = pending
            .get(&header.producer_id)
            .or_else(|| self.producers.get(&header.producer_id))
            .cloned()
            .unwrap_or_default();
        update_data_entry(&mut entry, header);
        entry
    }

    /// Applies a stored batch (its offsets final): data batches update their
    /// producer's entry and open its transaction; a control batch with its
    /// `marker` closes the transaction.
    pub fn apply(&mut self, header: &BatchHeader, marker: Option<Marker>) {
        self.end_offset = self.end_offset.max(header.next_offset());
        let producer_id = header.producer_id;
        if producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(producer_id).or_default();
        match (header.is_control(), marker) {
            (false, _) => {
                update_data_entry(entry, header);
                if header.is_transactional() && entry.txn_first_offset.is_none() {
                    entry.txn_first_offset = Some(header.base_offset);
                    self.ongoing.insert(header.base_offset, producer_id);
                }
            }
            (true, Some(marker)) => {
                entry.marker_serial += 1;
                entry.enter_epoch(header.producer_epoch);
                entry.last_timestamp = header.max_timestamp;
                entry.coordinator_epoch = marker.coordinator_epoch;
                if let Some(first_offset) = entry.txn_first_offset.take() {
                    self.ongoing.remove(&first_offset);
                    if !marker.commit {
                        let last_stable_offset = self
                            .ongoing
                            .keys()
                            .next()
                            .copied()
                            .unwrap_or(header.next_offset());
                        self.aborted.push(AbortedTxn {
                            producer_id,
                            first_offset,
                            last_offset: header.base_offset,
                            last_stable_offset,
                        });
                    }
                }
            }
            (true, None) => {
                // A control batch that is not a transaction marker (none exist yet).
            }
        }
    }

    /// Forgets aborted transactions wholly below `log_start_offset`.
    pub fn on_log_start(&mut self, log_start_offset: i64) {
        self.aborted
            .retain(|txn| txn.last_offset >= log_start_offset);
    }

    /// Removes producers whose latest batch is older than `expiration_ms`
    /// and that have no open transaction. Returns how many went.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let entry = &self.producers[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            body.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                body.extend_from_slice(&batch.first_seq.to_be_bytes());
                body.extend_from_slice(&batch.last_seq.to_be_bytes());
                body.extend_from_slice(&batch.first_offset.to_be_bytes());
                body.extend_from_slice(&batch.last_offset.to_be_bytes());
                body.extend_from_slice(&batch.timestamp.to_be_bytes());
            }
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for txn in &self.aborted {
            body.extend_from_slice(&txn.producer_id.to_be_bytes());
            body.extend_from_slice(&txn.first_offset.to_be_bytes());
            body.extend_from_slice(&txn.last_offset.to_be_bytes());
            body.extend_from_slice(&txn.last_stable_offset.to_be_bytes());
        }
        let mut file = Vec::with_capacity(body.len() + 8);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        file.extend_from_slice(&body);
        file
    }

    fn decode(bytes: &[u8], end_offset: i64) -> Result<ProducerState, String> {
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err("not a producer snapshot".into());
        }
        let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let body = &bytes[8..];
        if crc32c::crc32c(body) != crc {
            return Err("checksum mismatch".into());
        }
        let mut reader = Reader { bytes: body };
        let mut state = ProducerState::new(end_offset);
        let count = reader.count(PRODUCER_FIXED_BYTES)?;
        for _ in 0..count {
            let id = reader.i64()?;
            let epoch = reader.i16()?;
            let last_timestamp = reader.i64()?;
            let coordinator_epoch = reader.i32()?;
            let txn_first_offset = Some(reader.i64()?).filter(|offset| *offset >= 0);
            let batches = reader.u8()? as usize;
            if batches > BATCHES_RETAINED {
                return Err(format!("{batches} batches for producer {id}"));
            }
            let mut entry = ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(batches),
                last_timestamp,
                coordinator_epoch,
                txn_first_offset,
                marker_serial: 0,
            };
            for _ in 0..batches {
                entry.batches.push_back(BatchMetadata {
                    first_seq: reader.i32()?,
                    last_seq: reader.i32()?,
                    first_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                    timestamp: reader.i64()?,
                });
            }
            if let Some(first) = txn_first_offset {
                state.ongoing.insert(first, id);
            }
            state.producers.insert(id, entry);
        }
        let count = reader.count(ABORTED_BYTES)?;
        for _ in 0..count {
            state.aborted.push(AbortedTxn {
                producer_id: reader.i64()?,
                first_offset: reader.i64()?,
                last_offset: reader.i64()?,
                last_stable_offset: reader.i64()?,
            });
        }
        if !reader.bytes.is_empty() {
            return Err(format!("{} bytes after the end", reader.bytes.len()));
        }
        Ok(state)
    }

    /// Writes the state as of [`Self::end_offset`] and removes snapshots
    /// beyond the newest [`SNAPSHOTS_KEPT`].
    pub fn write_snapshot(&self, dir: &Path) -> Result<(), StorageError> {
        let name = snapshot_file_name(self.end_offset);
        checkpoint::write_atomically(dir, &name, &self.encode())?;
        Self::prune_snapshots(dir)
    }

    /// [`Self::write_snapshot`] without the fsyncs and the pruning, for a
    /// roll under the log's lock: the caller fsyncs the returned file and
    /// the directory, and prunes, later and without the lock. Until then a
    /// crash of the machine may leave the file short or empty, which its
    /// CRC tells; loading then falls back to an older snapshot.
    pub fn write_snapshot_unsynced(&self, dir: &Path) -> Result<PathBuf, StorageError> {
        let name = snapshot_file_name(self.end_offset);
        checkpoint::write_replacing(dir, &name, &self.encode())
    }

    /// Removes all but the newest snapshots.
    pub fn prune_snapshots(dir: &Path) -> Result<(), StorageError> {
        let offsets = list_snapshots(dir)?;
        if offsets.len() > SNAPSHOTS_KEPT {
            for offset in &offsets[..offsets.len() - SNAPSHOTS_KEPT] {
                remove_snapshot(dir, *offset)?;
            }
        }
        Ok(())
    }

    /// The newest readable snapshot at or below `at_most`, after deleting
    /// every snapshot above it (they describe a log that is gone). `None`
    /// when there is none: the state is then rebuilt from the log start.
    pub fn load_snapshot(dir: &Path, at_most: i64) -> Result<Option<ProducerState>, StorageError> {
        let offsets = list_snapshots(dir)?;
        for offset in offsets.iter().filter(|offset| **offset > at_most) {
            remove_snapshot(dir, *offset)?;
        }
        for offset in offsets.iter().rev().filter(|offset| **offset <= at_most) {
            let path = dir.join(snapshot_file_name(*offset));
            match read_snapshot(&path, *offset) {
                Ok(state) => return Ok(Some(state)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "producer snapshot ignored");
                }
            }
        }
        Ok(None)
    }

    /// Removes every snapshot (the log was emptied).
    pub fn remove_snapshots(dir: &Path) -> Result<(), StorageError> {
        for offset in list_snapshots(dir)? {
            remove_snapshot(dir, offset)?;
        }
        Ok(())
    }
}

fn update_data_entry(entry: &mut ProducerEntry, header: &BatchHeader) {
    entry.enter_epoch(header.producer_epoch);
    entry.batches.push_back(BatchMetadata {
        first_seq: header.base_sequence,
        last_seq: last_sequence(header),
        first_offset: header.base_offset,
        last_offset: header.last_offset(),
        timestamp: header.max_timestamp,
    });
    if entry.batches.len() > BATCHES_RETAINED {
        entry.batches.pop_front();
    }
    entry.last_timestamp = header.max_timestamp;
}

/// A transaction marker as a control batch of one record, as Kafka writes
/// it: transactional and control attributes, the producer's id and epoch,
/// no sequence; key (version 0, type 0 abort / 1 commit), value (version 0,
/// coordinator epoch).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    timestamp_ms: i64,
) -> Result<bytes::Bytes, StorageError> {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let mut value = vec![0u8, 0];
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: NO_SEQUENCE,
        timestamp: timestamp_ms,
        key: Some(bytes::Bytes::from(vec![0, 0, 0, marker.commit as u8])),
        value: Some(bytes::Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|error| StorageError::InvalidRecord(format!("encoding a marker: {error}")))?;
    Ok(buf.freeze())
}

/// The marker in a control batch (the whole stored batch): its record's key
/// is (version i16, type i16: 0 abort, 1 commit), its value (version i16,
/// coordinator epoch i32). `None` for a control batch that is not a marker.
pub fn parse_marker(batch: &[u8], header: &BatchHeader) -> Option<Marker> {
    let found = walk_records(batch, header, |record| {
        std::ops::ControlFlow::Break((
            record.key.map(<[u8]>::to_vec),
            record.value.map(<[u8]>::to_vec),
        ))
    });
    let Ok(Some((Some(key), value))) = found else {
        return None;
    };
    Marker::from_record(&key, value.as_deref())
}

impl Marker {
    /// The marker a control record's key (version i16, type i16: 0 abort,
    /// 1 commit) and value (version i16, coordinator epoch i32) make; `None`
    /// for a control record that is not a marker. The one parser of
    /// markers, for the log and for the coordinators that replay one.
    pub fn from_record(key: &[u8], value: Option<&[u8]>) -> Option<Marker> {
        let [_, _, high, low, ..] = *key else {
            return None;
        };
        let commit = match i16::from_be_bytes([high, low]) {
            0 => false,
            1 => true,
            _ => return None,
        };
        let coordinator_epoch = value.filter(|value| value.len() >= 6).map_or(-1, |value| {
            i32::from_be_bytes([value[2], value[3], value[4], value[5]])
        });
        Some(Marker {
            commit,
            coordinator_epoch,
        })
    }
}

pub fn snapshot_file_name(offset: i64) -> String {
    format!("{offset:020}{SNAPSHOT_SUFFIX}")
}

fn list_snapshots(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(offset) = name
            .strip_suffix(SNAPSHOT_SUFFIX)
            .and_then(|stem| stem.parse::<i64>().ok())
        {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

fn remove_snapshot(dir: &Path, offset: i64) -> Result<(), StorageError> {
    let path: PathBuf = dir.join(snapshot_file_name(offset));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).at(&path),
    }
}

fn read_snapshot(path: &Path, offset: i64) -> Result<ProducerState, String> {
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    file.take(SNAPSHOT_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
        return Err(format!("larger than {SNAPSHOT_BYTES_MAX} bytes"));
    }
    ProducerState::decode(&bytes, offset)
}

/// Big-endian fields from a byte slice, every read checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.bytes.len() < N {
            return Err("truncated".into());
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    /// A u32 count of items of at least `item_bytes` each, checked against
    /// the bytes left.
    fn count(&mut self, item_bytes: usize) -> Result<usize, String> {
        let count = u32::from_be_bytes(self.take()?) as usize;
        if count.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(format!(
                "{count} items do not fit in {} bytes",
                self.bytes.len()
            ));
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn append(state: &mut ProducerState, header: BatchHeader) -> Result<Verdict, StorageError> {
        let verdict = state.check(&HashMap::new(), &header, None)?;
        if verdict == Verdict::Append {
            state.apply(&header, None);
        }
        Ok(verdict)
    }

    #[test]
    fn sequences_follow_on_duplicates_are_found_and_gaps_refused() {
        let mut state = ProducerState::new(0);
        assert_eq!(
            append(&mut state, header(7, 0, 0, 3, 0)).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            append(&mut state, header(7, 0, 3, 2, 3)).unwrap(),
            Verdict::Append
        );
        let Verdict::Duplicate(first) = append(&mut state, header(7, 0, 0, 3, 99)).unwrap() else {
            panic!("a retry is a duplicate");
        };
        assert_eq!((first.first_offset, first.last_offset), (0, 2));
        assert!(matches!(
            append(&mut state, header(7, 0, 6, 1, 5)),
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            append(&mut state, header(7, 0, 4, 1, 5)),
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert_eq!(
            append(&mut state, header(7, 0, 5, 1, 5)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut state = ProducerState::new(0);
        append(&mut state, header(1, 3, 0, 1, 0)).unwrap();
        assert!(matches!(
            append(&mut state, header(1, 2, 1, 1, 1)),
            Err(StorageError::InvalidProducerEpoch(_))
        ));
        assert!(matches!(
            append(&mut state, header(1, 4, 5, 1, 1)),
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert_eq!(
            append(&mut state, header(1, 4, 0, 1, 1)).unwrap(),
            Verdict::Append
        );
        assert_eq!(state.producer(1).unwrap().epoch, 4);
        // An unknown producer may start anywhere (its entry may have expired).
        assert_eq!(
            append(&mut state, header(2, 0, 42, 1, 2)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut state = ProducerState::new(0);
        append(&mut state, header(1, 0, i32::MAX - 1, 3, 0)).unwrap();
        assert_eq!(state.producer(1).unwrap().last_seq(), 0);
        assert_eq!(
            append(&mut state, header(1, 0, 1, 1, 3)).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut state = ProducerState::new(0);
        for i in 0..7 {
            append(&mut state, header(1, 0, i, 1, i as i64)).unwrap();
        }
        assert!(matches!(
            append(&mut state, header(1, 0, 1, 1, 9)),
            Err(StorageError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            append(&mut state, header(1, 0, 2, 1, 9)).unwrap(),
            Verdict::Duplicate(_)
        ));
    }

    #[test]
    fn bad_producer_fields_are_invalid_records() {
        let state = ProducerState::new(0);
        assert!(matches!(
            state.check(&HashMap::new(), &header(1, 0, -1, 1, 0), None),
            Err(StorageError::InvalidRecord(_))
        ));
        let mut transactional = header(-1, -1, -1, 1, 0);
        transactional.attributes = protocol::batch::ATTRIBUTE_TRANSACTIONAL;
        assert!(matches!(
            state.check(&HashMap::new(), &transactional, None),
            Err(StorageError::InvalidRecord(_))
        ));
    }

    #[test]
    fn markers_parse_the_whole_type_and_the_coordinator_epoch() {
        let epoch_7 = [0u8, 0, 0, 0, 0, 7];
        let parsed = |key: &[u8], value: Option<&[u8]>| {
            Marker::from_record(key, value).map(|m| (m.commit, m.coordinator_epoch))
        };
        assert_eq!(parsed(&[0, 0, 0, 1], Some(&epoch_7)), Some((true, 7)));
        assert_eq!(parsed(&[0, 0, 0, 0], None), Some((false, -1)));
        // Type 257 is no marker, although its low byte says commit.
        assert_eq!(parsed(&[0, 0, 1, 1], Some(&epoch_7)), None);
        assert_eq!(parsed(&[0, 0, 0], None), None);
    }

    #[test]
    fn transactions_open_and_close_with_markers() {
        let mut state = ProducerState::new(0);
        let mut data = header(1, 0, 0, 2, 10);
        data.attributes = protocol::batch::ATTRIBUTE_TRANSACTIONAL;
        state.apply(&data, None);
        let mut other = header(2, 0, 0, 1, 12);
        other.attributes = protocol::batch::ATTRIBUTE_TRANSACTIONAL;
        state.apply(&other, None);
        assert_eq!(state.first_unstable_offset(), Some(10));
        let mut marker = header(1, 0, -1, 1, 13);
        marker.attributes =
            protocol::batch::ATTRIBUTE_TRANSACTIONAL | protocol::batch::ATTRIBUTE_CONTROL;
        state.apply(
            &marker,
            Some(Marker {
                commit: false,
                coordinator_epoch: 5,
            }),
        );
        assert_eq!(state.first_unstable_offset(), Some(12));
        assert_eq!(
            state.aborted_between(0, 100),
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 13,
                last_stable_offset: 12
            }]
        );
        assert!(state.aborted_between(14, 100).is_empty());
        assert_eq!(state.producer(1).unwrap().coordinator_epoch, 5);
    }

    #[test]
    fn snapshots_round_trip_and_bad_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ProducerState::new(0);
        for i in 0..7 {
            state.apply(&header(i % 3, 1, i as i32, 2, i * 2), None);
        }
        let mut data = header(9, 0, 0, 1, 14);
        data.attributes = protocol::batch::ATTRIBUTE_TRANSACTIONAL;
        state.apply(&data, None);
        state.write_snapshot(dir.path()).unwrap();
        let loaded = ProducerState::load_snapshot(dir.path(), 100)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.producers, state.producers);
        assert_eq!(loaded.ongoing, state.ongoing);
        assert_eq!(loaded.end_offset(), 15);
        // Above the end: removed.
        assert!(ProducerState::load_snapshot(dir.path(), 14)
            .unwrap()
            .is_none());
        assert!(list_snapshots(dir.path()).unwrap().is_empty());
        // Corrupt: ignored.
        state.write_snapshot(dir.path()).unwrap();
        let path = dir.path().join(snapshot_file_name(15));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(ProducerState::load_snapshot(dir.path(), 100)
            .unwrap()
            .is_none());
        // A count larger than the file: refused before anything is allocated.
        let mut forged = MAGIC.to_vec();
        let body = u32::MAX.to_be_bytes();
        forged.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        forged.extend_from_slice(&body);
        assert!(ProducerState::decode(&forged, 0).is_err());
    }
}
