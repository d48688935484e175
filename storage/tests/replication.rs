//! The log as replication uses it: a leader appending without committing,
//! a follower appending the leader's batches byte for byte, epochs recorded
//! at election, truncation to where two logs diverge, and the high
//! watermark surviving a restart.

mod common;

use common::{all_bytes, batch, concat, config, headers, open, NOW};
use storage::{LogConfig, TimestampType};

#[test]
fn a_follower_holds_the_leaders_batches_byte_for_byte() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(leader_dir.path(), config());
    let mut follower = open(follower_dir.path(), config());
    for epoch in [0, 0, 3, 3, 5] {
        leader
            .append_as_leader(batch(3, 20, NOW), epoch, NOW)
            .unwrap();
    }
    assert_eq!(
        leader.high_watermark(),
        0,
        "a leader's appends are not committed yet"
    );
    let fetched = all_bytes(&leader);
    assert_eq!(
        follower.append_as_follower(fetched.clone(), NOW).unwrap(),
        5
    );
    assert_eq!(all_bytes(&follower), fetched);
    assert_eq!(follower.log_end_offset(), 15);
    assert_eq!(
        follower.high_watermark(),
        0,
        "the leader says where that is"
    );
    // The follower's epochs are the leader's.
    for epoch in 0..7 {
        assert_eq!(
            follower.end_offset_for_epoch(epoch),
            leader.end_offset_for_epoch(epoch)
        );
    }
    assert_eq!(follower.last_epoch(), 5);
    // A retried fetch returns what the follower has: skipped, not doubled.
    assert_eq!(follower.append_as_follower(fetched, NOW).unwrap(), 0);
    assert_eq!(follower.log_end_offset(), 15);
}

#[test]
fn a_follower_takes_gaps_refuses_overlaps_and_leaves_a_cut_batch_for_later() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = open(leader_dir.path(), config());
    let mut follower = open(follower_dir.path(), config());
    for _ in 0..3 {
        leader.append_as_leader(batch(2, 10, NOW), 1, NOW).unwrap();
    }
    let fetched = all_bytes(&leader);
    let first = headers(&fetched)[0].total_size();
    // Offsets 2.. after an empty log: a gap, as a compacted leader's log
    // has where the cleaner dropped whole batches. Taken, as Kafka does.
    let gapped_dir = tempfile::tempdir().unwrap();
    let mut gapped = open(gapped_dir.path(), config());
    assert_eq!(
        gapped
            .append_as_follower(fetched.slice(first..), NOW)
            .unwrap(),
        2
    );
    assert_eq!(gapped.log_end_offset(), 6);
    assert_eq!(all_bytes(&gapped), fetched.slice(first..));
    // A batch that starts below the log end (but ends past it) is refused.
    let mut shifted = fetched.slice(first..first * 2).to_vec();
    shifted[..8].copy_from_slice(&5i64.to_be_bytes());
    assert!(gapped
        .append_as_follower(bytes::Bytes::from(shifted), NOW)
        .is_err());
    assert_eq!(gapped.log_end_offset(), 6);
    // A fetch cut in the middle of its second batch.
    let cut = fetched.slice(..first + 20);
    assert_eq!(follower.append_as_follower(cut, NOW).unwrap(), 1);
    assert_eq!(follower.log_end_offset(), 2);
    assert_eq!(
        follower.append_as_follower(fetched.clone(), NOW).unwrap(),
        2
    );
    assert_eq!(all_bytes(&follower), fetched);
    let mut corrupt = fetched.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let mut other = open(tempfile::tempdir().unwrap().path(), config());
    assert!(other
        .append_as_follower(bytes::Bytes::from(corrupt), NOW)
        .is_err());
}

#[test]
fn a_new_leaders_epoch_starts_where_its_log_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    log.append_as_leader(batch(4, 10, NOW), 2, NOW).unwrap();
    log.assign_leader_epoch(3).unwrap();
    // Before it appends anything, epoch 2 is known to end at 4.
    assert_eq!(log.end_offset_for_epoch(2), (2, 4));
    assert_eq!(log.end_offset_for_epoch(3), (3, 4));
    log.append_as_leader(batch(1, 10, NOW), 3, NOW).unwrap();
    assert_eq!(log.end_offset_for_epoch(2), (2, 4));
    assert_eq!(log.last_epoch(), 3);
}

/// The divergence Kafka's KIP-101 is about: an old leader's unreplicated
/// tail at epoch 1 while the new leader wrote at epoch 2 from the same
/// offset. Truncating at the end of the shared epoch makes the logs equal.
#[test]
fn truncating_at_the_shared_epochs_end_makes_two_logs_equal() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut old = open(old_dir.path(), config());
    let mut new = open(new_dir.path(), config());
    old.append_as_leader(batch(3, 10, NOW), 1, NOW).unwrap();
    new.append_as_follower(all_bytes(&old), NOW).unwrap();
    old.append_as_leader(batch(2, 10, NOW), 1, NOW).unwrap(); // never replicated
    new.assign_leader_epoch(2).unwrap();
    new.append_as_leader(batch(4, 10, NOW), 2, NOW).unwrap();

    let (epoch, end) = new.end_offset_for_epoch(old.last_epoch());
    assert_eq!((epoch, end), (1, 3));
    assert!(end < old.log_end_offset(), "the old leader diverges");
    old.truncate_to(end).unwrap();
    old.append_as_follower(
        new.read(end, usize::MAX >> 1, new.log_end_offset(), true)
            .unwrap(),
        NOW,
    )
    .unwrap();
    assert_eq!(all_bytes(&old), all_bytes(&new));
    assert_eq!(old.end_offset_for_epoch(1), (1, 3));
}

#[test]
fn the_high_watermark_survives_a_restart_where_it_was_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), config());
        log.append_as_leader(batch(10, 10, NOW), 0, NOW).unwrap();
        log.set_high_watermark(4);
        log.checkpoint_high_watermark().unwrap();
        log.append_as_leader(batch(10, 10, NOW), 0, NOW).unwrap();
        // No close: as after kill -9.
    }
    let log = open(dir.path(), config());
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(
        log.high_watermark(),
        4,
        "not the log end: what followers may not have is not visible"
    );
}

/// A broker that led at an epoch and wrote nothing follows again: that
/// epoch must go from its cache, or it would keep naming it in fetches and
/// the leader would keep answering "diverging" at its log end.
#[test]
fn an_epoch_that_wrote_nothing_goes_when_truncating_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), config());
    log.append_as_leader(batch(3, 10, NOW), 4, NOW).unwrap();
    log.assign_leader_epoch(5).unwrap();
    assert_eq!(log.last_epoch(), 5);
    log.truncate_to(log.log_end_offset()).unwrap();
    assert_eq!(log.last_epoch(), 4);
    assert_eq!(log.log_end_offset(), 3, "no batch removed");
    drop(log);
    assert_eq!(
        open(dir.path(), config()).last_epoch(),
        4,
        "and it stays gone"
    );
}

/// What a follower fetches above the leader's high watermark comes from
/// memory, in pieces (each batch's header as stamped, then its records),
/// and is exactly what the file holds; the high watermark, truncation and
/// a follower's append end it, and reads go to the file again.
#[test]
fn a_follower_reads_the_leaders_tail_from_memory_as_the_file_holds_it() {
    for timestamp_type in [TimestampType::CreateTime, TimestampType::LogAppendTime] {
        let dir = tempfile::tempdir().unwrap();
        let leader_config = LogConfig {
            message_timestamp_type: timestamp_type,
            ..config()
        };
        let mut leader = open(dir.path(), leader_config);
        for epoch in [1, 1, 2, 2] {
            leader
                .append_as_leader(batch(3, 30, NOW), epoch, NOW)
                .unwrap();
        }
        let end = leader.log_end_offset();
        let read = |log: &storage::PartitionLog, offset: i64| {
            log.read_for_replica(offset, usize::MAX >> 1, end, true)
                .unwrap()
        };
        let file = |log: &storage::PartitionLog, offset: i64| {
            log.read(offset, usize::MAX >> 1, end, true).unwrap()
        };
        let pieces = read(&leader, 0);
        assert_eq!(pieces.len(), 8, "four batches from memory, two pieces each");
        assert_eq!(concat(&pieces), file(&leader, 0));
        // From inside a batch: from that batch's start, as the file read.
        let pieces = read(&leader, 4);
        assert_eq!(pieces.len(), 6);
        assert_eq!(concat(&pieces), file(&leader, 4));
        // At most max_bytes of whole batches; one at least if asked.
        let first = headers(&file(&leader, 0))[0].total_size();
        let limited = leader.read_for_replica(0, first + 10, end, false).unwrap();
        assert_eq!(concat(&limited), file(&leader, 0).slice(..first));
        assert!(leader
            .read_for_replica(0, 10, end, false)
            .unwrap()
            .is_empty());
        assert_eq!(
            concat(&leader.read_for_replica(0, 10, end, true).unwrap()),
            file(&leader, 0).slice(..first)
        );
        // A follower appends the pieces joined: the leader's bytes.
        let follower_dir = tempfile::tempdir().unwrap();
        let mut follower = open(follower_dir.path(), config());
        follower
            .append_as_follower(concat(&read(&leader, 0)), NOW)
            .unwrap();
        assert_eq!(all_bytes(&follower), all_bytes(&leader));
        assert_eq!(read(&follower, 0).len(), 1, "a follower keeps no tail");
        // Below the high watermark: from the file.
        leader.set_high_watermark(7);
        assert_eq!(read(&leader, 0).len(), 1);
        assert_eq!(concat(&read(&leader, 0)), file(&leader, 0));
        assert_eq!(
            read(&leader, 6).len(),
            4,
            "the batch holding 7 and the next"
        );
        // Truncation empties it; appends after it start it anew.
        leader.truncate_to(9).unwrap();
        assert_eq!(read(&leader, 6).len(), 1);
        assert_eq!(concat(&read(&leader, 6)), file(&leader, 6));
        leader.append_as_leader(batch(2, 30, NOW), 3, NOW).unwrap();
        let pieces = leader
            .read_for_replica(9, usize::MAX >> 1, leader.log_end_offset(), true)
            .unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            concat(&pieces),
            leader
                .read(9, usize::MAX >> 1, leader.log_end_offset(), true)
                .unwrap()
        );
    }
}
