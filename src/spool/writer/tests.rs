//! Group commit on a real disk: concurrent appends share syncs, each is answered with its own
//! sequence number, and every answered record is in the log when it is opened again; the
//! drainer is handed every durable record in order; a full spool refuses appends until
//! applied segments are removed.

use super::{AppendError, SpoolWriter, WriterOptions};
use crate::spool::test_dir::TestDir;
use crate::spool::{RecordSeq, SpoolLog};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs_and_every_answered_record_is_on_disk() {
    let dir = TestDir::new("group-commit");
    let (log, _) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    let options = WriterOptions {
        max_bytes: u64::MAX,
        durable: None,
        sync_seconds: None,
    };
    let (writer, appender) = SpoolWriter::start(log, options);
    let appends = (0..200).map(|n| {
        let appender = appender.clone();
        async move {
            let payload = format!("request {n}").into_bytes();
            (appender.append(payload.clone()).await.expect("durable"), payload)
        }
    });
    let answered: BTreeMap<_, _> = futures_util::future::join_all(appends)
        .await
        .into_iter()
        .collect();

    let seqs: Vec<u64> = answered.keys().map(|seq| seq.0).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<_>>(),
        "each append has its own number"
    );
    assert_eq!(appender.records(), 200);
    assert!(
        appender.syncs() <= 20,
        "200 concurrent appends took {} syncs",
        appender.syncs()
    );
    drop(appender);
    let log = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .unwrap();
    drop(log);

    let (mut log, recovery) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!((recovery.records, recovery.torn_tail), (200, None));
    let stored: BTreeMap<_, _> = log
        .read_from(crate::spool::RecordSeq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|record| (record.seq, record.payload.to_vec()))
        .collect();
    assert_eq!(stored, answered);
}

#[tokio::test]
async fn durable_records_reach_the_drainer_in_order_and_a_full_spool_refuses_until_segments_go() {
    let dir = TestDir::new("bounded");
    let (log, _) = SpoolLog::open(&dir.0, 1000).unwrap();
    let (durable, mut drained) = tokio::sync::mpsc::unbounded_channel();
    let options = WriterOptions {
        max_bytes: 3000,
        durable: Some(durable),
        sync_seconds: None,
    };
    let (writer, appender) = SpoolWriter::start(log, options);
    let mut seqs = Vec::new();
    let refused = loop {
        match appender.append(vec![7; 400]).await {
            Ok(seq) => seqs.push(seq),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(refused, AppendError::Full { max_bytes: 3000, bytes } if bytes > 2500),
        "{refused:?}"
    );
    assert_eq!(seqs.len(), 7, "seven records of 416 bytes fit in 3000");
    for seq in &seqs {
        let record = drained.recv().await.unwrap();
        assert_eq!((record.seq, record.payload.len()), (*seq, 400));
    }
    assert!(drained.try_recv().is_err(), "the refused record is not drained");
    assert_eq!(appender.segments(), 4, "two records per segment of 1000 bytes");

    let first_kept = appender.remove_applied(RecordSeq(4)).await.unwrap();
    assert_eq!(
        first_kept,
        RecordSeq(5),
        "records 1-4 filled the first two segments"
    );
    assert_eq!(appender.segments(), 2);
    assert!(appender.bytes() < 2000, "{} bytes left", appender.bytes());
    assert_eq!(appender.append(vec![7; 400]).await, Ok(RecordSeq(8)));
    drop(appender);
    tokio::task::spawn_blocking(move || writer.finish())
        .await
        .unwrap();
}
