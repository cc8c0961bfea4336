//! Every acknowledged event survives `kill -9` of the process that wrote it.
//!
//! The parent re-runs this test binary as a child (`child_ingest_loop`), which ingests events forever
//! and prints each acknowledged change key; the parent SIGKILLs it mid-stream and reopens the journal.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_bridge::events::{Action, Collection, EventSink, Ingested, NewEvent, Source};
use cf_bridge::journal::{EventFilter, JobState, Journal, now_ms};

const CHILD_ENV: &str = "CF_BRIDGE_JOURNAL_CHILD_PATH";
const ACKS_BEFORE_KILL: usize = 400;
const CHILD_TASKS: usize = 4;
/// Upper bound on what the child writes if nobody kills it.
const CHILD_MAX_EVENTS: usize = 200_000;

fn event(task: usize, i: usize) -> NewEvent {
    let record_id = format!("rec{task}x{}", i % 25);
    let updated = format!("{task}-{i}");
    NewEvent {
        source: Source::Realtime,
        collection: Collection::BotInstances,
        dedupe_key: NewEvent::change_key(Collection::BotInstances, &record_id, Action::Update, Some(&updated)),
        record_id,
        action: Action::Update,
        record_updated: Some(updated),
        delivery_id: None,
        payload: serde_json::json!({"i": i}),
        fingerprint: None,
        trace_context: None,
    }
}

#[test]
#[ignore = "helper process for kill_9_loses_no_acknowledged_event"]
fn child_ingest_loop() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let journal = Journal::open(std::path::Path::new(&path)).expect("child opens the journal");
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for task in 0..CHILD_TASKS {
            let (journal, out) = (journal.clone(), Arc::clone(&out));
            tasks.push(tokio::spawn(async move {
                for i in 0..CHILD_MAX_EVENTS / CHILD_TASKS {
                    let e = event(task, i);
                    let key = e.dedupe_key.clone();
                    if let Ok(Ingested::New { .. }) = journal.ingest(e).await {
                        let mut out = out.lock().expect("stdout lock");
                        writeln!(out, "ACK {key}").expect("write ack");
                        out.flush().expect("flush ack");
                    }
                    // Leave some jobs running for resume_on_start to find.
                    if i % 20 == 0 {
                        let _ = journal.claim_due(now_ms(), 2).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("child task");
        }
    });
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    drop(Journal::open(&path).expect("create journal"));

    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "journal_durability::child_ingest_loop",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");

    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(Ok(line)) = lines.next() {
            if let Some(key) = line.strip_prefix("ACK ") {
                acked.push(key.to_owned());
            }
            if acked.len() == ACKS_BEFORE_KILL || Instant::now() > deadline {
                break;
            }
        }
        (acked, lines)
    });
    let (mut acked, lines) = tokio::task::spawn_blocking(move || reader.join().expect("reader thread"))
        .await
        .expect("join reader");
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap child");
    // Acks already in the pipe when the child died count too.
    acked.extend(
        lines
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("ACK ").map(str::to_owned)),
    );
    assert!(
        acked.len() >= ACKS_BEFORE_KILL,
        "child acknowledged only {} events",
        acked.len()
    );

    let journal = Journal::open(&path).expect("reopen after kill -9");
    let mut stored = HashSet::new();
    let mut cursor = None;
    loop {
        let (rows, next) = journal
            .list_events(EventFilter::default(), cursor, 1000)
            .await
            .expect("list");
        stored.extend(rows.into_iter().map(|e| e.dedupe_key));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let missing: Vec<_> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );

    let resumed = journal.resume_on_start().await.expect("resume");
    assert!(resumed > 0, "the child left claimed jobs running");
    let counts = journal.job_counts().await.expect("counts");
    assert_eq!(counts[&JobState::Running], 0);
    println!(
        "acknowledged {}, stored {}, resumed {resumed} running jobs",
        acked.len(),
        stored.len()
    );
}
