//! The trial ledger: the database where the proposer of a distributed multi-trial search
//! queues trials and workers claim them, heartbeat while they evaluate, and write results.
//! One trait ([`Ledger`]) over two backends: SQLite ([`sqlite`], a file in the run folder,
//! for processes on one machine) and PostgreSQL ([`postgres`], for many machines).
//!
//! Tables (schema [`SCHEMA_VERSION`], created and migrated by [`MIGRATIONS`]):
//! - `meta`: `schema_version`;
//! - `studies`: one row per pipeline name: its spec hash, the nas-pipe version that
//!   created it, the lease (seconds without a heartbeat after which a running trial is
//!   claimed again), `max_attempts`, and whether the proposer has finished;
//! - `trials`: per study, trial id (the proposal's number in the search record), generation,
//!   index in the generation, proposal (the architecture, JSON), state
//!   (`waiting`/`running`/`done`/`failed`), attempt, worker, heartbeat, result (JSON) and
//!   the last error;
//! - `workers`: per study, each worker's id, host, pid, start, last heartbeat and trials done.
//!
//! Contracts: a claim is atomic (two workers never hold one lease); a trial whose heartbeat
//! is older than the lease is claimed again (at-least-once); the first result written wins
//! and a second one for the same trial id is ignored (results are a function of the trial,
//! so either is the same); a trial that failed or lost its worker `max_attempts` times is
//! `failed` with its last error. Times are the database's clock, in seconds since the epoch.

pub mod postgres;
pub mod sqlite;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The schema's migration steps: step `i` takes a ledger from version `i` to `i + 1`.
/// Written in the SQL both backends accept.
pub const MIGRATIONS: &[&str] = &["
CREATE TABLE studies (
    name TEXT PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    version TEXT NOT NULL,
    lease_s DOUBLE PRECISION NOT NULL,
    max_attempts BIGINT NOT NULL,
    finished BIGINT NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE trials (
    study TEXT NOT NULL,
    id BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    proposal TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat DOUBLE PRECISION,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    result TEXT,
    error TEXT,
    PRIMARY KEY (study, id)
);
CREATE INDEX trials_by_state ON trials (study, state, id);
CREATE TABLE workers (
    study TEXT NOT NULL,
    id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    done BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (study, id)
);
"];

/// A study as the proposer declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    /// The pipeline's name.
    pub name: String,
    /// `run::hash::search_hash` of the pipeline.
    pub spec_hash: String,
    /// The nas-pipe version of the proposer.
    pub version: String,
    /// Seconds without a heartbeat after which a running trial is claimed again.
    pub lease_s: f64,
    /// Attempts (failures or lost leases) after which a trial is `failed`.
    pub max_attempts: u32,
    /// The proposer has written its last trial and seen every result.
    pub finished: bool,
}

impl Study {
    /// Refuses a worker whose pipeline hashes to `spec_hash` or whose build is `version`
    /// when they differ from the study's.
    pub fn admit(&self, spec_hash: &str, version: &str) -> Result<()> {
        if self.version != version {
            return Err(Error::Input(format!(
                "the ledger's study \"{}\" was created by nas-pipe {} and this worker is nas-pipe \
                 {version}: run the same build everywhere",
                self.name, self.version
            )));
        }
        if self.spec_hash != spec_hash {
            return Err(Error::Input(format!(
                "the ledger's study \"{}\" has spec hash {} and this worker's pipeline hashes to \
                 {}: give every worker the proposer's pipeline file (and space, data, \
                 seed)",
                self.name,
                short(&self.spec_hash),
                short(spec_hash)
            )));
        }
        Ok(())
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A trial's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Waiting,
    Running,
    Done,
    Failed,
}

impl State {
    pub const ALL: [State; 4] = [State::Waiting, State::Running, State::Done, State::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<State> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Input(format!("the ledger holds an unknown trial state {s:?}")))
    }
}

/// A trial the proposer queues.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTrial {
    pub id: u64,
    pub generation: u64,
    pub index: u64,
    /// The architecture, JSON.
    pub proposal: String,
}

/// A trial as the ledger holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub id: u64,
    pub generation: u64,
    pub index: u64,
    pub proposal: String,
    pub state: State,
    pub attempt: u32,
    pub worker: Option<String>,
    pub heartbeat: Option<f64>,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    /// A [`Outcome`], JSON, once done.
    pub result: Option<String>,
    pub error: Option<String>,
}

/// What a worker writes for a done trial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The search signal, in [0, 1].
    pub accuracy: f64,
    /// The report signal, in [0, 1], when the evaluator gives one.
    pub report: Option<f64>,
    /// The evaluation's wall time on the worker.
    pub seconds: f64,
}

/// A claimed trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub id: u64,
    pub proposal: String,
    /// 1 on the first claim.
    pub attempt: u32,
}

/// A worker as the ledger lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started: f64,
    pub last_seen: f64,
    pub done: u64,
}

/// The ledger's operations; every backend keeps the contracts of this module's header.
pub trait Ledger: Send {
    /// Creates the study or takes it over: a study of that name with another spec hash or
    /// version is replaced and its trials and workers deleted (the search starts over).
    /// Clears `finished`.
    fn open_study(&mut self, s: &Study) -> Result<()>;
    /// The study of that name.
    fn study(&mut self, name: &str) -> Result<Option<Study>>;
    /// Marks the study finished: workers exit once nothing is waiting.
    fn finish_study(&mut self, name: &str) -> Result<()>;
    /// Queues trials as `waiting`; a trial whose id is there already is kept as it is, and
    /// one with another proposal is an error (the ledger belongs to another search).
    fn submit(&mut self, study: &str, trials: &[NewTrial]) -> Result<()>;
    /// Atomically claims the waiting trial with the lowest id, or a running one whose
    /// lease expired; marks `failed` an expired one that has had `max_attempts`.
    fn claim(&mut self, study: &str, worker: &str) -> Result<Option<Claim>>;
    /// Renews the worker's lease on `trial` (when it holds it) and its `last_seen`.
    fn heartbeat(&mut self, study: &str, worker: &str, trial: Option<u64>) -> Result<()>;
    /// Writes a done trial's result; ignored when the trial is done already.
    fn complete(&mut self, study: &str, worker: &str, trial: u64, result: &str) -> Result<()>;
    /// Records a failed attempt: the trial waits again, or is `failed` at `max_attempts`.
    fn fail(&mut self, study: &str, worker: &str, trial: u64, error: &str) -> Result<()>;
    /// The study's trials by id, all or one generation's.
    fn trials(&mut self, study: &str, generation: Option<u64>) -> Result<Vec<Trial>>;
    /// Adds (or refreshes) a worker.
    fn register(&mut self, study: &str, w: &Worker) -> Result<()>;
    /// The study's workers by id.
    fn workers(&mut self, study: &str) -> Result<Vec<Worker>>;
    /// The database's clock, seconds since the epoch.
    fn now(&mut self) -> Result<f64>;
}

/// Where a ledger lives: `sqlite:PATH` or `postgres://…` (`postgresql://…` too).
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    Sqlite(PathBuf),
    /// A libpq connection URL without a password (the password comes from `PGPASSWORD`
    /// or `~/.pgpass`).
    Postgres(String),
}

impl Storage {
    /// The default: `ledger.sqlite` in the run folder.
    pub fn in_run(run_dir: &Path) -> Storage {
        Storage::Sqlite(crate::run::RunDir::new(run_dir).ledger())
    }

    /// Parses a storage URL; refuses one with a password or a control character in it (it
    /// is printed, and written into launch scripts).
    pub fn parse(url: &str) -> Result<Storage> {
        if let Some(at) = url.chars().position(char::is_control) {
            return Err(Error::Input(format!(
                "storage URL {url:?} has a control character at position {}: write it on one \
                 line, without tabs or line breaks",
                at + 1
            )));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(Error::Input(
                    "storage URL \"sqlite:\" names no file: write sqlite:PATH".into(),
                ));
            }
            return Ok(Storage::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::check_url(url)?;
            return Ok(Storage::Postgres(url.to_string()));
        }
        Err(Error::Input(format!(
            "storage URL {url:?} is neither sqlite:PATH nor postgres://[USER@]HOST[:PORT]/DB"
        )))
    }

    /// Opens (creating and migrating when needed) the ledger.
    pub fn open(&self) -> Result<Box<dyn Ledger>> {
        Ok(match self {
            Storage::Sqlite(path) => Box::new(sqlite::Sqlite::open(path)?),
            Storage::Postgres(url) => Box::new(postgres::Postgres::open(url)?),
        })
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Storage::Postgres(u) => f.write_str(u),
        }
    }
}

/// The migration steps a ledger at schema `found` needs; an error when `found` is newer
/// than this build.
pub fn pending_migrations(found: i64, place: &str) -> Result<&'static [&'static str]> {
    if !(0..=SCHEMA_VERSION).contains(&found) {
        return Err(Error::Input(format!(
            "{place}: ledger schema version {found}, and this build reads version \
             {SCHEMA_VERSION}: use the nas-pipe that created it or a new ledger"
        )));
    }
    Ok(&MIGRATIONS[found as usize..])
}

/// The message of a failed trial that lost its worker `n` times.
pub fn lost_message(n: u32) -> String {
    format!("lost its worker {n} time(s): no heartbeat within the lease")
}

/// The error of a trial id the ledger holds with another proposal.
fn other_proposal(study: &str, t: &NewTrial, stored: &str) -> Error {
    Error::Input(format!(
        "the ledger's study \"{study}\" holds trial {} as {stored} and this search proposes {}: \
         the ledger belongs to another search; use another storage or delete the study",
        t.id, t.proposal
    ))
}

/// Counts of trials by state, in [`State::ALL`] order.
pub fn counts(trials: &[Trial]) -> [usize; 4] {
    let mut c = [0; 4];
    for t in trials {
        c[t.state as usize] += 1;
    }
    c
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn new(id: u64) -> NewTrial {
        NewTrial {
            id,
            generation: id / 2,
            index: id % 2,
            proposal: format!("[{id}]"),
        }
    }

    /// The module's contracts, on a fresh study named `contracts` of ledger `l`.
    pub(crate) fn contracts(l: &mut dyn Ledger) {
        let mut s = Study {
            name: "contracts".into(),
            spec_hash: "h1".into(),
            version: "v".into(),
            lease_s: 0.2,
            max_attempts: 2,
            finished: false,
        };
        l.open_study(&s).unwrap();
        assert_eq!(l.study("contracts").unwrap().unwrap(), s);
        l.submit("contracts", &[new(0), new(1), new(2)]).unwrap();
        // Submitting again is a no-op; another proposal under an id is refused.
        l.submit("contracts", &[new(1)]).unwrap();
        let mut other = new(1);
        other.proposal = "[9]".into();
        assert!(l.submit("contracts", &[other]).is_err());
        let w = Worker {
            id: "w1".into(),
            host: "h".into(),
            pid: 1,
            started: 0.0,
            last_seen: 0.0,
            done: 0,
        };
        l.register("contracts", &w).unwrap();
        let a = l.claim("contracts", "w1").unwrap().unwrap();
        assert_eq!((a.id, a.attempt, a.proposal.as_str()), (0, 1, "[0]"));
        let b = l.claim("contracts", "w2").unwrap().unwrap();
        assert_eq!(b.id, 1);
        // The first result wins.
        l.complete("contracts", "w1", 0, "first").unwrap();
        l.complete("contracts", "w2", 0, "second").unwrap();
        // A failed attempt waits again, the second is final.
        l.fail("contracts", "w2", 1, "boom").unwrap();
        let c = l.claim("contracts", "w2").unwrap().unwrap();
        assert_eq!((c.id, c.attempt), (1, 2));
        l.fail("contracts", "w2", 1, "boom again").unwrap();
        // A lease that expires is claimed again, and at max_attempts the trial fails.
        let d = l.claim("contracts", "w1").unwrap().unwrap();
        assert_eq!((d.id, d.attempt), (2, 1));
        l.heartbeat("contracts", "w1", Some(2)).unwrap();
        assert!(
            l.claim("contracts", "w2").unwrap().is_none(),
            "the lease holds"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        let e = l.claim("contracts", "w2").unwrap().unwrap();
        assert_eq!((e.id, e.attempt), (2, 2));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(l.claim("contracts", "w1").unwrap().is_none());
        let ts = l.trials("contracts", None).unwrap();
        assert_eq!(ts[0].result.as_deref(), Some("first"));
        assert_eq!(ts[0].state, State::Done);
        assert_eq!(
            (ts[1].state, ts[1].error.as_deref()),
            (State::Failed, Some("boom again"))
        );
        assert_eq!(ts[2].state, State::Failed);
        assert_eq!(ts[2].error.as_deref(), Some(lost_message(2).as_str()));
        assert_eq!(counts(&ts), [0, 0, 1, 2]);
        assert_eq!(l.trials("contracts", Some(1)).unwrap().len(), 1);
        let ws = l.workers("contracts").unwrap();
        assert_eq!((ws.len(), ws[0].done), (1, 1));
        assert!(ws[0].last_seen > 1.0e9 && l.now().unwrap() >= ws[0].last_seen);
        // finished, and a study taken over by another spec loses its trials.
        l.finish_study("contracts").unwrap();
        assert!(l.study("contracts").unwrap().unwrap().finished);
        s.spec_hash = "h2".into();
        l.open_study(&s).unwrap();
        assert!(l.trials("contracts", None).unwrap().is_empty());
        assert!(!l.study("contracts").unwrap().unwrap().finished);
    }

    #[test]
    fn storage_urls() {
        assert_eq!(
            Storage::parse("sqlite:/tmp/x.sqlite").unwrap(),
            Storage::Sqlite("/tmp/x.sqlite".into())
        );
        assert_eq!(
            Storage::parse("sqlite://rel/x.sqlite").unwrap(),
            Storage::Sqlite("rel/x.sqlite".into())
        );
        assert!(Storage::parse("postgres://nas@127.0.0.1:5432/nas").is_ok());
        let e = Storage::parse("postgres://nas:secret@host/nas").unwrap_err();
        assert!(e.to_string().contains("PGPASSWORD"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(Storage::parse("mysql://x").is_err());
        assert!(Storage::parse("sqlite:").is_err());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        assert_eq!(pending_migrations(0, "x").unwrap().len(), MIGRATIONS.len());
        assert!(pending_migrations(SCHEMA_VERSION, "x").unwrap().is_empty());
        let e = pending_migrations(SCHEMA_VERSION + 1, "db").unwrap_err();
        assert!(e.to_string().contains("schema version 2"), "{e}");
    }

    #[test]
    fn workers_of_another_build_or_spec_are_refused() {
        let s = Study {
            name: "p".into(),
            spec_hash: "abc".into(),
            version: "0.1.0".into(),
            lease_s: 30.0,
            max_attempts: 3,
            finished: false,
        };
        assert!(s.admit("abc", "0.1.0").is_ok());
        assert!(
            s.admit("abd", "0.1.0")
                .unwrap_err()
                .to_string()
                .contains("spec hash")
        );
        assert!(
            s.admit("abc", "0.2.0")
                .unwrap_err()
                .to_string()
                .contains("nas-pipe 0.1.0")
        );
    }
}
