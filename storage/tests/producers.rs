//! Idempotent and transactional producers' state in the log: duplicates
//! answered with their first offsets, sequence gaps and old epochs refused,
//! and the state surviving a crash, a clean restart, a truncation and a
//! change of leader (followers build it from what they replicate).

mod common;

use common::{all_bytes, batch, config, marker_batch, open, producer_batch, NOW};
use storage::{LogConfig, PartitionLog, StorageError};

fn append(
    log: &mut PartitionLog,
    bytes: bytes::Bytes,
) -> Result<storage::AppendInfo, StorageError> {
    log.append(bytes, 0, NOW)
}

/// Appends a transactional batch that starts its transaction here, as the
/// leader does once the coordinator verified it.
fn append_txn(
    log: &mut PartitionLog,
    bytes: bytes::Bytes,
) -> Result<storage::AppendInfo, StorageError> {
    let header = common::headers(&bytes)[0];
    let guard = log
        .producers()
        .verification_guard(header.producer_id, header.producer_epoch)
        .unwrap_or(0);
    let info = log.append_as_leader_verified(bytes, 0, NOW, guard)?;
    log.set_high_watermark(log.log_end_offset());
    Ok(info)
}

#[test]
fn a_retried_batch_gets_its_first_offsets_and_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    append(&mut log, batch(2, 10, NOW)).unwrap();
    let first = append(&mut log, producer_batch(7, 0, 0, 3, false)).unwrap();
    let second = append(&mut log, producer_batch(7, 0, 3, 2, false)).unwrap();
    assert_eq!(
        (first.first_offset, first.last_offset, first.duplicate),
        (2, 4, false)
    );
    assert_eq!((second.first_offset, second.last_offset), (5, 6));
    let end = log.log_end_offset();
    let retry = append(&mut log, producer_batch(7, 0, 0, 3, false)).unwrap();
    assert_eq!(
        (retry.first_offset, retry.last_offset, retry.duplicate),
        (2, 4, true)
    );
    assert_eq!(log.log_end_offset(), end, "nothing written");
    // A gap, an overlap and an older epoch are refused; the next sequence is not.
    for (epoch, sequence) in [(0, 6), (0, 4)] {
        assert!(matches!(
            append(&mut log, producer_batch(7, epoch, sequence, 1, false)),
            Err(StorageError::OutOfOrderSequence(_))
        ));
    }
    append(&mut log, producer_batch(7, 0, 5, 1, false)).unwrap();
    append(&mut log, producer_batch(7, 1, 0, 1, false)).unwrap();
    assert!(matches!(
        append(&mut log, producer_batch(7, 0, 6, 1, false)),
        Err(StorageError::InvalidProducerEpoch(_))
    ));
    assert_eq!(log.log_end_offset(), end + 2);
}

/// The state a fresh leader would check the next batches against.
/// Its last batch had `last_count` records.
fn expect_continues(
    log: &mut PartitionLog,
    producer_id: i64,
    next_sequence: i32,
    last_count: usize,
) {
    let retry = log
        .append(
            producer_batch(
                producer_id,
                0,
                next_sequence - last_count as i32,
                last_count,
                false,
            ),
            0,
            NOW,
        )
        .unwrap();
    assert!(retry.duplicate, "the last batch is known");
    assert!(matches!(
        log.append(
            producer_batch(producer_id, 0, next_sequence + 1, 1, false),
            0,
            NOW
        ),
        Err(StorageError::OutOfOrderSequence(_))
    ));
    let next = log
        .append(
            producer_batch(producer_id, 0, next_sequence, 1, false),
            0,
            NOW,
        )
        .unwrap();
    assert!(!next.duplicate);
}

#[test]
fn the_state_survives_a_crash_and_a_clean_restart() {
    // Small segments, so that rolls leave snapshots behind the tail.
    let small = LogConfig {
        segment_bytes: 400,
        ..config()
    };
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), small.clone());
        for sequence in 0..20 {
            append(&mut log, producer_batch(1, 0, sequence, 1, false)).unwrap();
            append(&mut log, producer_batch(2, 0, sequence * 2, 2, false)).unwrap();
        }
        assert!(log.segment_count() > 3);
        assert!(!common::segment_files(dir.path(), ".snapshot").is_empty());
        if clean {
            log.close().unwrap();
        } else {
            drop(log); // kill -9: no close, no final snapshot
        }
        let mut log = open(dir.path(), small.clone());
        expect_continues(&mut log, 1, 20, 1);
        expect_continues(&mut log, 2, 40, 2);
    }
}

#[test]
fn a_state_without_any_snapshot_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    for sequence in 0..5 {
        append(&mut log, producer_batch(3, 0, sequence, 1, false)).unwrap();
    }
    log.close().unwrap();
    for snapshot in common::segment_files(dir.path(), ".snapshot") {
        std::fs::write(snapshot, b"garbage").unwrap();
    }
    let mut log = open(dir.path(), config());
    expect_continues(&mut log, 3, 5, 1);
}

#[test]
fn truncation_forgets_what_the_removed_batches_did() {
    let dir = tempfile::tempdir().unwrap();
    let small = LogConfig {
        segment_bytes: 300,
        ..config()
    };
    let mut log = open(dir.path(), small);
    for sequence in 0..10 {
        append(&mut log, producer_batch(4, 0, sequence, 1, false)).unwrap();
    }
    log.truncate_to(6).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    // Sequences 6..9 are gone: 6 is next again, and not a duplicate.
    expect_continues(&mut log, 4, 6, 1);
    log.truncate_to(0).unwrap();
    let again = append(&mut log, producer_batch(4, 0, 0, 1, false)).unwrap();
    assert!(!again.duplicate);
}

#[test]
fn a_follower_knows_the_producers_when_it_becomes_leader() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(leader_dir.path(), config());
    let mut follower = open(follower_dir.path(), config());
    for sequence in 0..4 {
        leader
            .append_as_leader(producer_batch(5, 0, sequence, 1, false), 1, NOW)
            .unwrap();
    }
    follower
        .append_as_follower(all_bytes(&leader), NOW)
        .unwrap();
    // The producer retries its last batch at the new leader.
    let retry = follower
        .append_as_leader(producer_batch(5, 0, 3, 1, false), 2, NOW)
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.first_offset, 3);
    assert!(matches!(
        follower.append_as_leader(producer_batch(5, 0, 5, 1, false), 2, NOW),
        Err(StorageError::OutOfOrderSequence(_))
    ));
}

#[test]
fn transactions_are_tracked_through_markers_and_restarts() {
    let (leader_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut source = open(leader_dir.path(), config());
    // Producer 8 aborts, producer 9 stays open.
    source
        .append_as_leader_verified(producer_batch(8, 0, 0, 2, true), 0, NOW, 0)
        .unwrap();
    source
        .append_as_leader_verified(producer_batch(9, 0, 0, 1, true), 0, NOW, 0)
        .unwrap();
    source
        .append_as_leader(producer_batch(8, 0, 2, 1, true), 0, NOW)
        .unwrap();
    let mut log = open(dir.path(), config());
    log.append_as_follower(all_bytes(&source), NOW).unwrap();
    log.append_as_follower(
        {
            let mut marker = bytes::BytesMut::from(&marker_batch(8, 0, false, 3)[..]);
            protocol::batch::set_base_offset(&mut marker, 4);
            marker.freeze()
        },
        NOW,
    )
    .unwrap();
    for clean in [true, false] {
        let state = log.producers();
        assert_eq!(
            state.first_unstable_offset(),
            Some(2),
            "producer 9's transaction is open"
        );
        let aborted = state.aborted_between(0, 10);
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (
                aborted[0].producer_id,
                aborted[0].first_offset,
                aborted[0].last_offset
            ),
            (8, 0, 4)
        );
        assert_eq!(state.producer(8).unwrap().coordinator_epoch, 3);
        if clean {
            log.close().unwrap();
        } else {
            drop(log);
        }
        log = open(dir.path(), config());
    }
}

#[test]
fn markers_end_transactions_and_move_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    append(&mut log, batch(2, 10, NOW)).unwrap();
    append_txn(&mut log, producer_batch(1, 0, 0, 2, true)).unwrap(); // offsets 2-3
    append_txn(&mut log, producer_batch(2, 0, 0, 1, true)).unwrap(); // offset 4
    assert_eq!(
        log.last_stable_offset(),
        2,
        "producer 1's transaction is open"
    );
    // A plain batch from a producer inside a transaction is refused.
    assert!(matches!(
        append(&mut log, producer_batch(1, 0, 2, 1, false)),
        Err(StorageError::InvalidTxnState(_))
    ));
    let abort = storage::Marker {
        commit: false,
        coordinator_epoch: 7,
    };
    let info = log.append_marker(1, 0, abort, 0, NOW).unwrap();
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(info.first_offset, 5);
    assert_eq!(log.last_stable_offset(), 4, "producer 2's is still open");
    let aborted = log.producers().aborted_between(0, 100);
    assert_eq!(
        (
            aborted[0].producer_id,
            aborted[0].first_offset,
            aborted[0].last_offset
        ),
        (1, 2, 5)
    );
    // Markers from older epochs or older coordinators are fenced (the
    // coordinator epochs are per producer: 6 is new for producer 2).
    log.append_marker(
        2,
        0,
        storage::Marker {
            commit: true,
            coordinator_epoch: 6,
        },
        0,
        NOW,
    )
    .unwrap();
    assert!(matches!(
        log.append_marker(
            1,
            0,
            storage::Marker {
                commit: true,
                coordinator_epoch: 6
            },
            0,
            NOW
        ),
        Err(StorageError::TransactionCoordinatorFenced(_))
    ));
    append_txn(&mut log, producer_batch(1, 1, 0, 1, true)).unwrap();
    assert!(matches!(
        log.append_marker(
            1,
            0,
            storage::Marker {
                commit: true,
                coordinator_epoch: 8
            },
            0,
            NOW
        ),
        Err(StorageError::InvalidProducerEpoch(_))
    ));
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.last_stable_offset(), 7);
    // The markers are control batches in the log, read back as such.
    let headers = common::headers(&all_bytes(&log));
    assert_eq!(headers.iter().filter(|h| h.is_control()).count(), 2);
    // And the state comes back from the log alone.
    log.close().unwrap();
    for snapshot in common::segment_files(dir.path(), ".snapshot") {
        std::fs::remove_file(snapshot).unwrap();
    }
    let log = open(dir.path(), config());
    assert_eq!(log.producers().first_unstable_offset(), Some(7));
    assert_eq!(log.producers().aborted_between(0, 100).len(), 1);
    assert_eq!(log.producers().producer(2).unwrap().coordinator_epoch, 6);
}

#[test]
fn a_coordinator_append_checks_only_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    append_txn(&mut log, producer_batch(3, 2, 0, 1, true)).unwrap();
    // Any sequence (a coordinator writes none), but not an older epoch.
    log.append_as_coordinator(producer_batch(3, 2, 40, 1, true), 0, NOW)
        .unwrap();
    assert!(matches!(
        log.append_as_coordinator(producer_batch(3, 1, 0, 1, true), 0, NOW),
        Err(StorageError::InvalidProducerEpoch(_))
    ));
}

#[test]
fn a_transaction_starts_in_a_partition_only_once_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    // Unverified: refused (a batch arriving after its transaction ended).
    assert!(matches!(
        append(&mut log, producer_batch(6, 0, 0, 1, true)),
        Err(StorageError::InvalidTxnState(_))
    ));
    let guard = log.producers().verification_guard(6, 0).unwrap();
    log.append_as_leader_verified(producer_batch(6, 0, 0, 1, true), 0, NOW, guard)
        .unwrap();
    // The transaction is open: no verification needed to go on.
    assert_eq!(log.producers().verification_guard(6, 0), None);
    append(&mut log, producer_batch(6, 0, 1, 1, true)).unwrap();
    // A guard taken before a marker does not hold after it.
    let stale = log.producers().verification_guard(6, 1).unwrap();
    log.append_marker(
        6,
        0,
        storage::Marker {
            commit: false,
            coordinator_epoch: 0,
        },
        0,
        NOW,
    )
    .unwrap();
    assert!(matches!(
        log.append_as_leader_verified(producer_batch(6, 1, 0, 1, true), 0, NOW, stale),
        Err(StorageError::InvalidTxnState(_))
    ));
    let fresh = log.producers().verification_guard(6, 1).unwrap();
    log.append_as_leader_verified(producer_batch(6, 1, 0, 1, true), 0, NOW, fresh)
        .unwrap();
}
