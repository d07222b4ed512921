//! The PostgreSQL ledger, for workers on many machines: a libpq-style URL without a
//! password (`postgres://USER@HOST:PORT/DB`); the password comes from `PGPASSWORD`, so it
//! is never part of a URL that nas-pipe prints or writes. Claims take the lowest claimable
//! trial with `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other's
//! row; migrations run under a transaction-scoped advisory lock.

use postgres::{Client, NoTls, Row};

use super::{Claim, Ledger, NewTrial, State, Study, Trial, Worker};
use crate::error::{Error, Result};

/// The clock of every timestamp: seconds since the epoch, with fractions.
const NOW: &str = "(extract(epoch from clock_timestamp())::double precision)";

/// The advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6e61_7370_6970;

pub struct Postgres {
    client: Client,
    /// The URL, for messages (it holds no password).
    url: String,
}

/// Checks that `url` parses and holds no password.
pub fn check_url(url: &str) -> Result<postgres::Config> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e| Error::Input(format!("storage URL {url:?} is not a PostgreSQL URL: {e}")))?;
    if config.get_password().is_some() {
        return Err(Error::Input(
            "the storage URL holds a password: remove it and set PGPASSWORD instead (nas-pipe \
             prints and records storage URLs, never passwords)"
                .into(),
        ));
    }
    Ok(config)
}

impl Postgres {
    /// Connects (password from `PGPASSWORD`) and migrates.
    pub fn open(url: &str) -> Result<Postgres> {
        let mut config = check_url(url)?;
        if let Some(pw) = std::env::var_os("PGPASSWORD") {
            config.password(pw.to_string_lossy().as_bytes());
        }
        if config.get_user().is_none()
            && let Ok(u) = std::env::var("PGUSER").or_else(|_| std::env::var("USER"))
        {
            config.user(&u);
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        let client = config.connect(NoTls).map_err(|e| {
            Error::Input(format!("ledger {url}: cannot connect to PostgreSQL: {e}"))
        })?;
        let mut p = Postgres {
            client,
            url: url.to_string(),
        };
        p.migrate()?;
        Ok(p)
    }

    fn e(&self) -> impl Fn(postgres::Error) -> Error + '_ {
        move |e| err(&self.url, e)
    }

    fn migrate(&mut self) -> Result<()> {
        let url = self.url.clone();
        let e = move |x| err(&url, x);
        let mut tx = self.client.transaction().map_err(&e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(&e)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .map_err(&e)?;
        let found: i64 = tx
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .map_err(&e)?
            .map(|r| r.get::<_, String>(0).parse().unwrap_or(-1))
            .unwrap_or(0);
        for step in super::pending_migrations(found, &self.url)? {
            tx.batch_execute(step).map_err(&e)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&super::SCHEMA_VERSION.to_string()],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }
}

fn err(url: &str, e: postgres::Error) -> Error {
    Error::Input(format!("ledger {url}: {e}"))
}

fn trial(r: &Row) -> Result<Trial> {
    Ok(Trial {
        id: r.get::<_, i64>(0) as u64,
        generation: r.get::<_, i64>(1) as u64,
        index: r.get::<_, i64>(2) as u64,
        proposal: r.get(3),
        state: State::parse(r.get(4))?,
        attempt: r.get::<_, i64>(5) as u32,
        worker: r.get(6),
        heartbeat: r.get(7),
        started: r.get(8),
        finished: r.get(9),
        result: r.get(10),
        error: r.get(11),
    })
}

impl Ledger for Postgres {
    fn open_study(&mut self, s: &Study) -> Result<()> {
        let url = self.url.clone();
        let e = move |x| err(&url, x);
        let mut tx = self.client.transaction().map_err(&e)?;
        let same: Option<bool> = tx
            .query_opt(
                "SELECT spec_hash = $2 AND version = $3 FROM studies WHERE name = $1 FOR UPDATE",
                &[&s.name, &s.spec_hash, &s.version],
            )
            .map_err(&e)?
            .map(|r| r.get(0));
        if same == Some(false) {
            tx.execute("DELETE FROM trials WHERE study = $1", &[&s.name])
                .map_err(&e)?;
            tx.execute("DELETE FROM workers WHERE study = $1", &[&s.name])
                .map_err(&e)?;
        }
        tx.execute(
            &format!(
                "INSERT INTO studies (name, spec_hash, version, lease_s, max_attempts, finished, created)
                 VALUES ($1, $2, $3, $4, $5, 0, {NOW})
                 ON CONFLICT (name) DO UPDATE SET spec_hash = excluded.spec_hash,
                   version = excluded.version, lease_s = excluded.lease_s,
                   max_attempts = excluded.max_attempts, finished = 0"
            ),
            &[&s.name, &s.spec_hash, &s.version, &s.lease_s, &(s.max_attempts as i64)],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }

    fn study(&mut self, name: &str) -> Result<Option<Study>> {
        let row = self
            .client
            .query_opt(
                "SELECT name, spec_hash, version, lease_s, max_attempts, finished FROM studies WHERE name = $1",
                &[&name],
            )
            .map_err(|e| err(&self.url, e))?;
        Ok(row.map(|r| Study {
            name: r.get(0),
            spec_hash: r.get(1),
            version: r.get(2),
            lease_s: r.get(3),
            max_attempts: r.get::<_, i64>(4) as u32,
            finished: r.get::<_, i64>(5) != 0,
        }))
    }

    fn finish_study(&mut self, name: &str) -> Result<()> {
        self.client
            .execute("UPDATE studies SET finished = 1 WHERE name = $1", &[&name])
            .map_err(|e| err(&self.url, e))?;
        Ok(())
    }

    fn submit(&mut self, study: &str, trials: &[NewTrial]) -> Result<()> {
        let url = self.url.clone();
        let e = move |x| err(&url, x);
        let mut tx = self.client.transaction().map_err(&e)?;
        for t in trials {
            let id = t.id as i64;
            tx.execute(
                "INSERT INTO trials (study, id, generation, idx, proposal, state)
                 VALUES ($1, $2, $3, $4, $5, 'waiting') ON CONFLICT (study, id) DO NOTHING",
                &[
                    &study,
                    &id,
                    &(t.generation as i64),
                    &(t.index as i64),
                    &t.proposal,
                ],
            )
            .map_err(&e)?;
            let stored: String = tx
                .query_one(
                    "SELECT proposal FROM trials WHERE study = $1 AND id = $2",
                    &[&study, &id],
                )
                .map_err(&e)?
                .get(0);
            if stored != t.proposal {
                return Err(super::other_proposal(study, t, &stored));
            }
        }
        tx.commit().map_err(&e)
    }

    fn claim(&mut self, study: &str, worker: &str) -> Result<Option<Claim>> {
        let url = self.url.clone();
        let e = move |x| err(&url, x);
        let mut tx = self.client.transaction().map_err(&e)?;
        let Some(row) = tx
            .query_opt(
                "SELECT lease_s, max_attempts FROM studies WHERE name = $1",
                &[&study],
            )
            .map_err(&e)?
        else {
            return Ok(None);
        };
        let (lease, max): (f64, i64) = (row.get(0), row.get(1));
        let expired = format!("state = 'running' AND heartbeat < {NOW} - $2");
        tx.execute(
            &format!(
                "UPDATE trials SET state = 'failed', finished = {NOW},
                   error = 'lost its worker ' || attempt || ' time(s): no heartbeat within the lease'
                 WHERE study = $1 AND {expired} AND attempt >= $3"
            ),
            &[&study, &lease, &max],
        )
        .map_err(&e)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE trials SET state = 'running', worker = $3, attempt = attempt + 1,
                       heartbeat = {NOW}, started = {NOW}
                     WHERE study = $1 AND id = (
                       SELECT id FROM trials WHERE study = $1 AND (state = 'waiting' OR ({expired}))
                       ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, proposal, attempt"
                ),
                &[&study, &lease, &worker],
            )
            .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(row.map(|r| Claim {
            id: r.get::<_, i64>(0) as u64,
            proposal: r.get(1),
            attempt: r.get::<_, i64>(2) as u32,
        }))
    }

    fn heartbeat(&mut self, study: &str, worker: &str, trial: Option<u64>) -> Result<()> {
        let url = self.url.clone();
        let e = move |x| err(&url, x);
        if let Some(t) = trial {
            self.client
                .execute(
                    &format!(
                        "UPDATE trials SET heartbeat = {NOW}
                         WHERE study = $1 AND id = $2 AND worker = $3 AND state = 'running'"
                    ),
                    &[&study, &(t as i64), &worker],
                )
                .map_err(&e)?;
        }
        self.client
            .execute(
                &format!("UPDATE workers SET last_seen = {NOW} WHERE study = $1 AND id = $2"),
                &[&study, &worker],
            )
            .map_err(&e)?;
        Ok(())
    }

    fn complete(&mut self, study: &str, worker: &str, trial: u64, result: &str) -> Result<()> {
        let url = self.url.clone();
        let e = move |x| err(&url, x);
        let mut tx = self.client.transaction().map_err(&e)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE trials SET state = 'done', result = $3, worker = $4, finished = {NOW}
                     WHERE study = $1 AND id = $2 AND state <> 'done'"
                ),
                &[&study, &(trial as i64), &result, &worker],
            )
            .map_err(&e)?;
        tx.execute(
            &format!(
                "UPDATE workers SET done = done + $3, last_seen = {NOW} WHERE study = $1 AND id = $2"
            ),
            &[&study, &worker, &(n as i64)],
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }

    fn fail(&mut self, study: &str, worker: &str, trial: u64, error: &str) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "UPDATE trials SET error = $3,
                       state = CASE WHEN attempt >= (SELECT max_attempts FROM studies WHERE name = $1)
                               THEN 'failed' ELSE 'waiting' END,
                       finished = {NOW}
                     WHERE study = $1 AND id = $2 AND worker = $4 AND state = 'running'"
                ),
                &[&study, &(trial as i64), &error, &worker],
            )
            .map_err(|e| err(&self.url, e))?;
        Ok(())
    }

    fn trials(&mut self, study: &str, generation: Option<u64>) -> Result<Vec<Trial>> {
        let rows = self
            .client
            .query(
                "SELECT id, generation, idx, proposal, state, attempt, worker, heartbeat, started,
                   finished, result, error
                 FROM trials WHERE study = $1 AND ($2::BIGINT IS NULL OR generation = $2)
                 ORDER BY id",
                &[&study, &generation.map(|g| g as i64)],
            )
            .map_err(|e| err(&self.url, e))?;
        rows.iter().map(trial).collect()
    }

    fn register(&mut self, study: &str, w: &Worker) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO workers (study, id, host, pid, started, last_seen, done)
                     VALUES ($1, $2, $3, $4, {NOW}, {NOW}, 0)
                     ON CONFLICT (study, id) DO UPDATE SET last_seen = excluded.last_seen"
                ),
                &[&study, &w.id, &w.host, &(w.pid as i64)],
            )
            .map_err(|e| err(&self.url, e))?;
        Ok(())
    }

    fn workers(&mut self, study: &str) -> Result<Vec<Worker>> {
        let rows = self
            .client
            .query(
                "SELECT id, host, pid, started, last_seen, done FROM workers WHERE study = $1 ORDER BY id",
                &[&study],
            )
            .map_err(self.e())?;
        Ok(rows
            .iter()
            .map(|r| Worker {
                id: r.get(0),
                host: r.get(1),
                pid: r.get::<_, i64>(2) as u32,
                started: r.get(3),
                last_seen: r.get(4),
                done: r.get::<_, i64>(5) as u64,
            })
            .collect())
    }

    fn now(&mut self) -> Result<f64> {
        let r = self
            .client
            .query_one(&format!("SELECT {NOW}"), &[])
            .map_err(self.e())?;
        Ok(r.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the server `NAS_PIPE_TEST_POSTGRES` names (scripts/with-postgres.sh
    /// starts one); says it is skipped without one.
    #[test]
    fn the_ledger_contracts_hold_on_postgres() {
        let Ok(url) = std::env::var("NAS_PIPE_TEST_POSTGRES") else {
            eprintln!(
                "skipped: NAS_PIPE_TEST_POSTGRES is not set (scripts/with-postgres.sh sets it)"
            );
            return;
        };
        let mut l = Postgres::open(&url).unwrap();
        l.client
            .batch_execute("DELETE FROM trials WHERE study = 'contracts'; DELETE FROM workers WHERE study = 'contracts'; DELETE FROM studies WHERE name = 'contracts'")
            .unwrap();
        super::super::tests::contracts(&mut l);
        let e = Postgres::open("postgres://nobody@127.0.0.1:1/none")
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }
}
