//! The SQLite ledger: one file (by default `ledger.sqlite` in the run folder) that worker
//! processes on one machine share. WAL journal, a busy timeout, and claims in `BEGIN
//! IMMEDIATE` transactions, so one writer at a time and claims are atomic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Claim, Ledger, NewTrial, State, Study, Trial, Worker};
use crate::error::{Error, Result};

/// The clock of every timestamp: seconds since the epoch, with fractions.
const NOW: &str = "((julianday('now') - 2440587.5) * 86400.0)";

/// How long a statement waits for another process's write lock.
const BUSY: Duration = Duration::from_secs(60);

pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    /// Opens (creating and migrating when needed) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| err(path, e))?;
        let mut s = Sqlite {
            conn,
            path: path.to_path_buf(),
        };
        s.conn.busy_timeout(BUSY).map_err(|e| err(path, e))?;
        s.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(path, e))?;
        s.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(path, e))?;
        s.migrate()?;
        Ok(s)
    }

    fn e(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |e| err(&self.path, e)
    }

    /// Brings the schema to [`super::SCHEMA_VERSION`] in one transaction.
    fn migrate(&mut self) -> Result<()> {
        let place = self.path.display().to_string();
        let path = self.path.clone();
        let e = move |x| err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .map_err(&e)?;
        let found: i64 = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(&e)?
            .map(|v| v.parse().unwrap_or(-1))
            .unwrap_or(0);
        let steps = super::pending_migrations(found, &place)?;
        for step in steps {
            tx.execute_batch(step).map_err(&e)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![super::SCHEMA_VERSION.to_string()],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }
}

fn err(path: &Path, e: rusqlite::Error) -> Error {
    Error::Input(format!("ledger {}: {e}", path.display()))
}

fn trial(r: &rusqlite::Row) -> rusqlite::Result<(Trial, String)> {
    Ok((
        Trial {
            id: r.get::<_, i64>(0)? as u64,
            generation: r.get::<_, i64>(1)? as u64,
            index: r.get::<_, i64>(2)? as u64,
            proposal: r.get(3)?,
            state: State::Waiting,
            attempt: r.get::<_, i64>(5)? as u32,
            worker: r.get(6)?,
            heartbeat: r.get(7)?,
            started: r.get(8)?,
            finished: r.get(9)?,
            result: r.get(10)?,
            error: r.get(11)?,
        },
        r.get(4)?,
    ))
}

impl Ledger for Sqlite {
    fn open_study(&mut self, s: &Study) -> Result<()> {
        let path = self.path.clone();
        let e = move |x| err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let same: Option<bool> = tx
            .query_row(
                "SELECT spec_hash = ?2 AND version = ?3 FROM studies WHERE name = ?1",
                params![s.name, s.spec_hash, s.version],
                |r| r.get(0),
            )
            .optional()
            .map_err(&e)?;
        if same == Some(false) {
            tx.execute("DELETE FROM trials WHERE study = ?1", params![s.name])
                .map_err(&e)?;
            tx.execute("DELETE FROM workers WHERE study = ?1", params![s.name])
                .map_err(&e)?;
        }
        tx.execute(
            &format!(
                "INSERT INTO studies (name, spec_hash, version, lease_s, max_attempts, finished, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, {NOW})
                 ON CONFLICT (name) DO UPDATE SET spec_hash = excluded.spec_hash,
                   version = excluded.version, lease_s = excluded.lease_s,
                   max_attempts = excluded.max_attempts, finished = 0"
            ),
            params![s.name, s.spec_hash, s.version, s.lease_s, s.max_attempts as i64],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }

    fn study(&mut self, name: &str) -> Result<Option<Study>> {
        self.conn
            .query_row(
                "SELECT name, spec_hash, version, lease_s, max_attempts, finished FROM studies WHERE name = ?1",
                params![name],
                |r| {
                    Ok(Study {
                        name: r.get(0)?,
                        spec_hash: r.get(1)?,
                        version: r.get(2)?,
                        lease_s: r.get(3)?,
                        max_attempts: r.get::<_, i64>(4)? as u32,
                        finished: r.get::<_, i64>(5)? != 0,
                    })
                },
            )
            .optional()
            .map_err(self.e())
    }

    fn finish_study(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE studies SET finished = 1 WHERE name = ?1",
                params![name],
            )
            .map_err(self.e())?;
        Ok(())
    }

    fn submit(&mut self, study: &str, trials: &[NewTrial]) -> Result<()> {
        let path = self.path.clone();
        let e = move |x| err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        for t in trials {
            let old: Option<String> = tx
                .query_row(
                    "SELECT proposal FROM trials WHERE study = ?1 AND id = ?2",
                    params![study, t.id as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&e)?;
            match old {
                Some(p) if p == t.proposal => {}
                Some(p) => return Err(super::other_proposal(study, t, &p)),
                None => {
                    tx.execute(
                        "INSERT INTO trials (study, id, generation, idx, proposal, state)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'waiting')",
                        params![
                            study,
                            t.id as i64,
                            t.generation as i64,
                            t.index as i64,
                            t.proposal
                        ],
                    )
                    .map_err(&e)?;
                }
            }
        }
        tx.commit().map_err(&e)
    }

    fn claim(&mut self, study: &str, worker: &str) -> Result<Option<Claim>> {
        let path = self.path.clone();
        let e = move |x| err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let Some((lease, max)): Option<(f64, i64)> = tx
            .query_row(
                "SELECT lease_s, max_attempts FROM studies WHERE name = ?1",
                params![study],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&e)?
        else {
            return Ok(None);
        };
        let expired = format!("state = 'running' AND heartbeat < {NOW} - ?2");
        tx.execute(
            &format!(
                "UPDATE trials SET state = 'failed', finished = {NOW},
                   error = 'lost its worker ' || attempt || ' time(s): no heartbeat within the lease'
                 WHERE study = ?1 AND {expired} AND attempt >= ?3"
            ),
            params![study, lease, max],
        )
        .map_err(&e)?;
        let next: Option<i64> = tx
            .query_row(
                &format!(
                    "SELECT id FROM trials WHERE study = ?1 AND (state = 'waiting' OR ({expired}))
                     ORDER BY id LIMIT 1"
                ),
                params![study, lease],
                |r| r.get(0),
            )
            .optional()
            .map_err(&e)?;
        let Some(id) = next else {
            tx.commit().map_err(&e)?;
            return Ok(None);
        };
        let c = tx
            .query_row(
                &format!(
                    "UPDATE trials SET state = 'running', worker = ?3, attempt = attempt + 1,
                       heartbeat = {NOW}, started = {NOW}
                     WHERE study = ?1 AND id = ?2 RETURNING id, proposal, attempt"
                ),
                params![study, id, worker],
                |r| {
                    Ok(Claim {
                        id: r.get::<_, i64>(0)? as u64,
                        proposal: r.get(1)?,
                        attempt: r.get::<_, i64>(2)? as u32,
                    })
                },
            )
            .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(Some(c))
    }

    fn heartbeat(&mut self, study: &str, worker: &str, trial: Option<u64>) -> Result<()> {
        if let Some(t) = trial {
            self.conn
                .execute(
                    &format!(
                        "UPDATE trials SET heartbeat = {NOW}
                         WHERE study = ?1 AND id = ?2 AND worker = ?3 AND state = 'running'"
                    ),
                    params![study, t as i64, worker],
                )
                .map_err(self.e())?;
        }
        self.conn
            .execute(
                &format!("UPDATE workers SET last_seen = {NOW} WHERE study = ?1 AND id = ?2"),
                params![study, worker],
            )
            .map_err(self.e())?;
        Ok(())
    }

    fn complete(&mut self, study: &str, worker: &str, trial: u64, result: &str) -> Result<()> {
        let path = self.path.clone();
        let e = move |x| err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE trials SET state = 'done', result = ?3, worker = ?4, finished = {NOW}
                     WHERE study = ?1 AND id = ?2 AND state <> 'done'"
                ),
                params![study, trial as i64, result, worker],
            )
            .map_err(&e)?;
        tx.execute(
            &format!(
                "UPDATE workers SET done = done + ?3, last_seen = {NOW} WHERE study = ?1 AND id = ?2"
            ),
            params![study, worker, n as i64],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }

    fn fail(&mut self, study: &str, worker: &str, trial: u64, error: &str) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "UPDATE trials SET error = ?3,
                       state = CASE WHEN attempt >= (SELECT max_attempts FROM studies WHERE name = ?1)
                               THEN 'failed' ELSE 'waiting' END,
                       finished = {NOW}
                     WHERE study = ?1 AND id = ?2 AND worker = ?4 AND state = 'running'"
                ),
                params![study, trial as i64, error, worker],
            )
            .map_err(self.e())?;
        Ok(())
    }

    fn trials(&mut self, study: &str, generation: Option<u64>) -> Result<Vec<Trial>> {
        let e = self.e();
        let mut q = self
            .conn
            .prepare(
                "SELECT id, generation, idx, proposal, state, attempt, worker, heartbeat, started,
                   finished, result, error
                 FROM trials WHERE study = ?1 AND (?2 IS NULL OR generation = ?2) ORDER BY id",
            )
            .map_err(&e)?;
        let rows = q
            .query_map(params![study, generation.map(|g| g as i64)], trial)
            .map_err(&e)?;
        let mut out = Vec::new();
        for r in rows {
            let (mut t, state) = r.map_err(&e)?;
            t.state = State::parse(&state)?;
            out.push(t);
        }
        Ok(out)
    }

    fn register(&mut self, study: &str, w: &Worker) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO workers (study, id, host, pid, started, last_seen, done)
                     VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW}, 0)
                     ON CONFLICT (study, id) DO UPDATE SET last_seen = excluded.last_seen"
                ),
                params![study, w.id, w.host, w.pid as i64],
            )
            .map_err(self.e())?;
        Ok(())
    }

    fn workers(&mut self, study: &str) -> Result<Vec<Worker>> {
        let e = self.e();
        let mut q = self
            .conn
            .prepare(
                "SELECT id, host, pid, started, last_seen, done FROM workers WHERE study = ?1 ORDER BY id",
            )
            .map_err(&e)?;
        let rows = q
            .query_map(params![study], |r| {
                Ok(Worker {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get::<_, i64>(2)? as u32,
                    started: r.get(3)?,
                    last_seen: r.get(4)?,
                    done: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(&e)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(&e)
    }

    fn now(&mut self) -> Result<f64> {
        self.conn
            .query_row(&format!("SELECT {NOW}"), [], |r| r.get(0))
            .map_err(self.e())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_contracts_hold_on_sqlite() {
        let tmp = crate::fsutil::TempDir::new("ledger");
        let dir = tmp.join("ledger");
        let mut l = Sqlite::open(&dir.join("l.sqlite")).unwrap();
        super::super::tests::contracts(&mut l);
        // Reopening finds the schema current; a newer one is refused.
        drop(l);
        let c = Connection::open(dir.join("l.sqlite")).unwrap();
        c.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        let e = Sqlite::open(&dir.join("l.sqlite")).err().unwrap();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }
}
