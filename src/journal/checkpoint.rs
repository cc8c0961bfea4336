//! WAL checkpoints on a thread of their own, off the single writer's path.
//!
//! SQLite folds the WAL back into the database file at the commit that takes it past 1,000 pages, on the
//! committing connection, and with `synchronous=NORMAL` that commit waits for the checkpoint's fsyncs. On
//! the journal that connection is the single writer's, so every ingest queued behind such a commit (a
//! webhook waiting to be acknowledged) waited for the disk too: a commit of one event took 2-8 ms of wall
//! time for 0.1-2 ms of CPU (docs/BENCHMARKS.md, "Twentieth session"). Here the writer's commit hook only
//! wakes a thread with a connection of its own, which checkpoints in PASSIVE mode: it never waits for the
//! writer or a reader, and takes nothing from them but disk time. Once it has copied the whole WAL, the
//! writer's next transaction starts the WAL from its beginning, as after SQLite's own checkpoints; the
//! writer's own checkpoint past [`WAL_PAGES_AT_MOST`] bounds it when writes never pause (64 MiB). A WAL
//! started over is cut back to [`WAL_BYTES_KEPT`], so the file stays that large between bursts instead of
//! at the burst's size.
//!
//! The checkpointer is asked at 4,000 pages, not at SQLite's 1,000. Under a flow of commits it catches up
//! with the writer (which the WAL's starting over needs) only after several passes, each copying what
//! the last commits wrote and syncing the WAL and the file: at 1,000 pages a flood of realtime frames
//! made 42 fsyncs a second, at 4,000 13, and each pass copies a page the flood keeps rewriting once for
//! all the versions it gathered (docs/BENCHMARKS.md, "Thirty-fourth session").

use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc;

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, ErrorCode, MAIN_DB};

use super::{JournalError, JournalOptions};

/// WAL pages after a commit that wake the checkpointer (16 MiB; SQLite's own threshold is 1,000).
pub const WAL_PAGES: c_int = 4000;
/// WAL pages after a commit past which the writer checkpoints on its own connection after all. Only a
/// checkpoint that copies the whole WAL lets it start over, and under writes that never pause the
/// checkpointer never finds it at rest: this keeps the file bounded (64 MiB).
pub const WAL_PAGES_AT_MOST: c_int = 4 * WAL_PAGES;
/// What the WAL file is cut back to when the writer starts it over (`journal_size_limit`): about the
/// [`WAL_PAGES`] a checkpoint is asked for at, so a steady flow of commits reuses the file it has (SQLite
/// overwrites a WAL faster than it appends to one), while a burst's growth up to [`WAL_PAGES_AT_MOST`] is
/// handed back to the disk.
pub const WAL_BYTES_KEPT: i64 = 16 << 20;

/// Starts the checkpointer of the journal at `path` and hands it the WAL growth of `writer`'s commits,
/// which from then on no longer checkpoint themselves. The thread ends when `writer` is dropped.
pub(crate) fn spawn(path: &Path, writer: &mut Connection, opts: &JournalOptions) -> Result<(), JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = super::connect(path, opts, false)?;
    // One pending wake-up is enough: a checkpoint copies everything committed before it starts.
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    hand_over(writer, wake).map_err(open_err)?;
    let logs = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new()
        .name("journal-checkpoint".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&logs, || {
                while woken.recv().is_ok() {
                    checkpoint(&conn);
                }
            })
        })
        .map_err(|e| JournalError::Task(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

/// Has `writer`'s commits send `wake` when they leave the WAL at [`WAL_PAGES`] or more, instead of
/// checkpointing on `writer` (SQLite's automatic checkpoint is itself a WAL hook, which this replaces),
/// unless it reached [`WAL_PAGES_AT_MOST`].
fn hand_over(writer: &mut Connection, wake: mpsc::SyncSender<()>) -> rusqlite::Result<()> {
    // SQLite cuts the file back when the connection that starts the WAL over has a limit: the writer.
    writer.pragma_update(None, "journal_size_limit", WAL_BYTES_KEPT)?;
    writer.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
        if pages >= WAL_PAGES_AT_MOST {
            report(wal.checkpoint_v2(CheckpointMode::PASSIVE));
        } else if pages >= WAL_PAGES {
            let _ = wake.try_send(());
        }
        // An error here would fail the statement whose commit has already happened.
        Ok(())
    }))
}

fn checkpoint(conn: &Connection) {
    report(conn.wal_checkpoint_v2(Some(MAIN_DB), CheckpointMode::PASSIVE));
}

fn report(outcome: rusqlite::Result<(c_int, c_int)>) {
    match outcome {
        Ok(_) => {}
        // Another checkpoint is under way (the checkpointer's, the writer's, the shutdown's): it does the
        // work, and the next commit past the mark asks again.
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {}
        Err(e) => tracing::warn!(error = %e, "journal checkpoint failed; the next one tries again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn insert_pages(writer: &mut Connection, pages: usize) {
        let tx = writer.transaction().unwrap();
        for _ in 0..pages {
            // A row of 4,000 bytes fills a page of 4,096.
            tx.execute("INSERT INTO t (x) VALUES (zeroblob(4000))", []).unwrap();
        }
        tx.commit().unwrap();
    }

    fn writer_handed_over(path: &Path) -> (Connection, mpsc::Receiver<()>) {
        let mut writer = Connection::open(path).unwrap();
        writer.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let (wake, woken) = mpsc::sync_channel(1);
        hand_over(&mut writer, wake).unwrap();
        (writer, woken)
    }

    fn file_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn past_the_most_the_writer_checkpoints_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (mut writer, _woken) = writer_handed_over(&path);
        insert_pages(&mut writer, WAL_PAGES_AT_MOST as usize + 100);
        assert!(
            file_bytes(&path) >= WAL_PAGES_AT_MOST as u64 * PAGE,
            "no checkpoint past {WAL_PAGES_AT_MOST} pages: the file holds {} bytes",
            file_bytes(&path)
        );
    }

    #[test]
    fn a_wal_started_over_is_cut_back_to_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let wal = dir.path().join("journal.db-wal");
        let (mut writer, _woken) = writer_handed_over(&path);
        insert_pages(&mut writer, WAL_PAGES_AT_MOST as usize + 100);
        assert!(
            file_bytes(&wal) > 3 * WAL_BYTES_KEPT as u64,
            "the burst did not grow the WAL"
        );
        // The writer's own checkpoint copied the whole WAL: the next commit starts it over.
        insert_pages(&mut writer, 10);
        assert!(
            file_bytes(&wal) <= WAL_BYTES_KEPT as u64,
            "the WAL started over still holds {} bytes",
            file_bytes(&wal)
        );
    }

    #[test]
    fn a_commit_past_the_threshold_wakes_the_checkpointer_instead_of_checkpointing_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        let (mut writer, woken) = writer_handed_over(&path);
        let db_bytes = || file_bytes(&path);

        insert_pages(&mut writer, 100);
        assert!(woken.try_recv().is_err(), "a WAL of 100 pages woke the checkpointer");
        insert_pages(&mut writer, 1500);
        assert!(
            woken.try_recv().is_err(),
            "a WAL of 1,600 pages woke the checkpointer (SQLite's own threshold is 1,000)"
        );
        insert_pages(&mut writer, WAL_PAGES as usize);
        assert!(
            woken.try_recv().is_ok(),
            "a WAL past {WAL_PAGES} pages did not wake the checkpointer"
        );
        // SQLite's own checkpoint would have copied the pages into the file during that commit.
        assert!(
            db_bytes() < 100 * PAGE,
            "the writer's commit checkpointed: the file holds {} bytes",
            db_bytes()
        );

        checkpoint(&crate::journal::connect(&path, &JournalOptions::default(), false).unwrap());
        assert!(
            db_bytes() >= (1600 + WAL_PAGES as u64) * PAGE,
            "the checkpoint did not copy the WAL into the file: {} bytes",
            db_bytes()
        );
        // The writer starts the WAL over after a complete checkpoint: a small commit is far below the mark.
        insert_pages(&mut writer, 10);
        assert!(
            woken.try_recv().is_err(),
            "the WAL was not started over after the checkpoint"
        );
    }
}
