//! Group commit on a real disk: concurrent appends share syncs, each is answered with its own
//! sequence number, and every answered record is in the log when it is opened again.

use super::SpoolWriter;
use crate::spool::SpoolLog;
use crate::spool::test_dir::TestDir;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs_and_every_answered_record_is_on_disk() {
    let dir = TestDir::new("group-commit");
    let (log, _) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    let (writer, appender) = SpoolWriter::start(log);
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

    let (log, recovery) = SpoolLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!((recovery.records, recovery.torn_tail), (200, None));
    let stored: BTreeMap<_, _> = log
        .read_from(crate::spool::RecordSeq(1), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|record| (record.seq, record.payload))
        .collect();
    assert_eq!(stored, answered);
}
