//! The spool's log on real files: what is read back after a sync and a reopen, and what a
//! crash's torn tail or a damaged older segment does at the next open.

use super::{SpoolLog, TornTail};
use crate::spool::test_dir::TestDir;
use crate::spool::{RecordSeq, SpoolError};
use std::io::Write;
use std::path::{Path, PathBuf};

fn payload(n: u64) -> Vec<u8> {
    format!("record {n}: {}", "x".repeat((n % 7) as usize * 10)).into_bytes()
}

fn payloads(log: &mut SpoolLog, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.read_from(RecordSeq(from), usize::MAX)
        .expect("the records read back")
        .into_iter()
        .map(|record| (record.seq.0, record.payload.to_vec()))
        .collect()
}

fn append_synced(log: &mut SpoolLog, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        assert_eq!(log.append(&payload(n)).expect("append").seq, RecordSeq(n));
    }
    log.sync().expect("sync");
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

#[test]
fn synced_records_come_back_in_order_after_a_reopen_across_segments() {
    let dir = TestDir::new("reopen");
    let (mut log, recovery) = SpoolLog::open(&dir.0, 300).unwrap();
    assert_eq!((recovery.records, recovery.torn_tail), (0, None));
    append_synced(&mut log, 1..=20);
    assert!(log.segments().len() > 3, "300-byte segments rotate");
    let expected: Vec<_> = (1..=20).map(|n| (n, payload(n))).collect();
    assert_eq!(payloads(&mut log, 1), expected);
    assert_eq!(payloads(&mut log, 15), expected[14..].to_vec());
    assert_eq!(log.read_from(RecordSeq(3), 4).unwrap().len(), 4);
    drop(log);

    let (mut log, recovery) = SpoolLog::open(&dir.0, 300).unwrap();
    assert_eq!((recovery.records, recovery.torn_tail), (20, None));
    assert_eq!(payloads(&mut log, 1), expected);
    assert_eq!(log.next_seq(), RecordSeq(21));
    append_synced(&mut log, 21..=22);
    assert_eq!(payloads(&mut log, 21), vec![(21, payload(21)), (22, payload(22))]);
}

#[test]
fn records_not_yet_synced_are_neither_read_nor_kept() {
    let dir = TestDir::new("unsynced");
    let (mut log, _) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    append_synced(&mut log, 1..=3);
    log.append(&payload(4)).unwrap();
    assert_eq!(payloads(&mut log, 1).len(), 3);
    drop(log);
    let (log, recovery) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.records, 3);
    assert_eq!(log.next_seq(), RecordSeq(4));
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_record_and_appends_go_on_from_there() {
    let dir = TestDir::new("torn");
    let (mut log, _) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    append_synced(&mut log, 1..=5);
    drop(log);
    let segment = newest_segment(&dir.0);
    let whole = std::fs::metadata(&segment).unwrap().len();
    let mut half_record = Vec::new();
    super::record::encode(RecordSeq(6), &payload(6), &mut half_record);
    half_record.truncate(half_record.len() / 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&half_record)
        .unwrap();

    let (mut log, recovery) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    let expected_cut = TornTail {
        path: segment.clone(),
        offset: whole,
        bytes_cut: half_record.len() as u64,
        reason: "record payload cut short",
    };
    assert_eq!((recovery.records, recovery.torn_tail), (5, Some(expected_cut)));
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole);
    append_synced(&mut log, 6..=6);
    assert_eq!(payloads(&mut log, 5), vec![(5, payload(5)), (6, payload(6))]);
}

#[test]
fn a_changed_byte_in_the_newest_segment_cuts_it_at_that_record() {
    let dir = TestDir::new("flipped");
    let (mut log, _) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    append_synced(&mut log, 1..=2);
    let after_two = std::fs::metadata(newest_segment(&dir.0)).unwrap().len();
    append_synced(&mut log, 3..=4);
    drop(log);
    let segment = newest_segment(&dir.0);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[after_two as usize + 20] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let (mut log, recovery) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    let torn = recovery.torn_tail.expect("the damaged record is cut");
    assert_eq!(
        (torn.offset, torn.reason),
        (after_two, "record checksum mismatch")
    );
    assert_eq!(payloads(&mut log, 1), vec![(1, payload(1)), (2, payload(2))]);
}

#[test]
fn a_damaged_older_segment_stops_the_open_and_names_the_file() {
    let dir = TestDir::new("older");
    let (mut log, _) = SpoolLog::open(&dir.0, 200).unwrap();
    append_synced(&mut log, 1..=10);
    let oldest = log.segments().next().unwrap().path.clone();
    drop(log);
    let mut bytes = std::fs::read(&oldest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&oldest, &bytes).unwrap();

    let error = SpoolLog::open(&dir.0, 200).unwrap_err();
    assert!(
        matches!(&error, SpoolError::Corrupt { path, reason: "record checksum mismatch", .. } if *path == oldest),
        "{error}"
    );
    assert!(
        error.to_string().contains(&oldest.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_newest_segment_with_a_torn_header_is_started_again_empty() {
    let dir = TestDir::new("header");
    let (mut log, _) = SpoolLog::open(&dir.0, 200).unwrap();
    append_synced(&mut log, 1..=10);
    let newest = log.segments().last().unwrap().clone();
    drop(log);
    std::fs::write(&newest.path, b"SGSP").unwrap();

    let (mut log, recovery) = SpoolLog::open(&dir.0, 200).unwrap();
    assert_eq!(recovery.records, newest.first.0 - 1);
    assert_eq!(
        recovery.torn_tail.unwrap().reason,
        "segment header missing or wrong"
    );
    assert_eq!(log.next_seq(), newest.first);
    let n = newest.first.0;
    append_synced(&mut log, n..=n);
    assert_eq!(payloads(&mut log, n), vec![(n, payload(n))]);
}

#[test]
fn applied_segments_are_removed_but_the_newest_stays_and_numbering_goes_on() {
    let dir = TestDir::new("remove");
    let (mut log, _) = SpoolLog::open(&dir.0, 200).unwrap();
    append_synced(&mut log, 1..=10);
    let segments: Vec<_> = log.segments().cloned().collect();
    assert!(segments.len() >= 3);
    let second_end = RecordSeq(segments[1].next.0 - 1);

    assert_eq!(log.remove_applied(RecordSeq(second_end.0 - 1)).unwrap(), 1);
    assert!(!segments[0].path.exists() && segments[1].path.exists());
    assert_eq!(log.remove_applied(second_end).unwrap(), 1);
    assert_eq!(payloads(&mut log, 1)[0].0, segments[2].first.0);
    let bytes_before = log.bytes();

    assert_eq!(log.remove_applied(RecordSeq(10)).unwrap(), segments.len() - 3);
    assert_eq!(log.segments().len(), 1);
    assert!(log.bytes() < bytes_before);
    drop(log);
    let (log, _) = SpoolLog::open(&dir.0, 200).unwrap();
    assert_eq!(log.next_seq(), RecordSeq(11));
}

#[test]
fn a_spool_keeps_its_id_across_opens_and_a_new_one_gets_its_own() {
    let (first, second) = (TestDir::new("id-a"), TestDir::new("id-b"));
    let id = SpoolLog::open(&first.0, 1 << 20).unwrap().0.id();
    assert_eq!(SpoolLog::open(&first.0, 1 << 20).unwrap().0.id(), id);
    assert_ne!(SpoolLog::open(&second.0, 1 << 20).unwrap().0.id(), id);

    std::fs::write(first.0.join("spool.id"), "not an id").unwrap();
    let error = SpoolLog::open(&first.0, 1 << 20).unwrap_err();
    assert!(
        matches!(&error, SpoolError::BadId { path } if path.ends_with("spool.id")),
        "{error}"
    );
}

#[test]
fn a_synced_record_is_read_from_its_mapped_segment_even_after_the_segment_is_removed() {
    let dir = TestDir::new("mapped");
    let (mut log, _) = SpoolLog::open(&dir.0, 300).unwrap();
    let mut appended = Vec::new();
    for n in 1..=20 {
        appended.push((log.append(&payload(n)).unwrap(), payload(n)));
        if n % 3 == 0 {
            log.sync().unwrap();
        }
    }
    let big = vec![7u8; 1000];
    appended.push((log.append(&big).unwrap(), big.clone()));
    log.sync().unwrap();
    assert!(log.segments().len() > 3, "300-byte segments rotate");
    let read: Vec<_> = appended
        .iter()
        .map(|(at, _)| log.synced_payload(at).unwrap())
        .collect();
    for ((at, expected), payload) in appended.iter().zip(&read) {
        assert_eq!(&payload[..], &expected[..], "record {}", at.seq.0);
    }

    assert!(log.remove_applied(RecordSeq(20)).unwrap() > 0);
    assert!(!log.segments().any(|segment| segment.first == RecordSeq(1)));
    assert_eq!(
        &read[0][..],
        &payload(1)[..],
        "a removed segment's records stay readable"
    );
    assert_eq!(&read[20][..], &big[..], "a record larger than the segment size");
}

#[test]
fn a_second_open_of_a_held_directory_is_refused_before_it_cuts_anything() {
    let dir = TestDir::new("held");
    let (mut log, _) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    append_synced(&mut log, 1..=2);
    let segment = newest_segment(&dir.0);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(b"half a record")
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();

    let error = SpoolLog::open(&dir.0, 1 << 20).unwrap_err();
    assert!(
        matches!(&error, SpoolError::InUse { dir: held, holder: Some(pid) }
            if *held == dir.0 && *pid == std::process::id()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "spool directory {} is in use by another shardgate process (pid {}); stop it, or give \
             this one a spool.dir of its own",
            dir.0.display(),
            std::process::id()
        )
    );
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        len,
        "the holder's segment is left as it is"
    );

    drop(log);
    let (_, recovery) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.records, 2, "the lock is released with the log");
}
