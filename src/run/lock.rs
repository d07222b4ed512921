//! The run folder's lock file, `nas-pipe.lock` (JSON): for each stage that has run, its
//! cache key and the parts it was made of, whether it finished, when and how long it ran,
//! and the hashes of the files it read (`inputs`) and wrote (`outputs`). A stage counts as
//! done only when its entry is finished, its key is the one the spec gives now, and every
//! output and input still has the recorded hash.
//!
//! The file carries a schema version; a lock of another version is refused, never
//! rewritten. A damaged one (empty, truncated) is refused too, except by `run --force`,
//! which sets it aside in `stale/` and begins anew. Readers check the recorded output
//! hashes through [`crate::run::outputs::verify`].

use crate::run::PIPELINE;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Stage;
use crate::error::{Error, Result};

/// Version of the lock file's layout.
pub const SCHEMA_VERSION: u32 = 1;
/// The lock file's name in the run folder.
pub const FILE: &str = crate::run::dir::LOCK;

/// `nas-pipe.lock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub schema_version: u32,
    /// The pipeline's name (the run folder's).
    pub pipeline: String,
    /// The nas-pipe version that last wrote the file.
    pub nas_pipe_version: String,
    /// One entry per stage that has started, in stage order.
    pub stages: Vec<Entry>,
}

/// One stage's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub stage: Stage,
    /// The cache key: a hash of `parts`.
    pub key: String,
    pub parts: KeyParts,
    pub status: Status,
    /// When the run that finished the stage (or is running it) started it, RFC 3339 UTC.
    pub started: String,
    /// When it finished; `None` while running (or after a crash).
    pub finished: Option<String>,
    /// Wall time of the run that finished the stage, in seconds (a resumed stage counts
    /// only the run that completed it; its epochs' own times are in its metrics).
    pub seconds: f64,
    /// Files of upstream stages this stage read, by path relative to the run folder.
    pub inputs: BTreeMap<String, FileHash>,
    /// Files this stage wrote, by path relative to the run folder.
    pub outputs: BTreeMap<String, FileHash>,
    /// How the outputs came to be when the stage did not compute them this time (e.g.
    /// "restored from stale/retrain-…").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a cache key is a hash of, kept so that `status` can say which part changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyParts {
    /// Hash of each resolved spec section the stage reads, by name: `search`, `retrain`,
    /// `export`, `validate`, `profile`, `data` (data set and normalisation), `seed`, `space`
    /// (the text of the space files), `genotype` (a fixed one), `spec` (the whole resolved
    /// spec, for the report).
    pub sections: BTreeMap<String, String>,
    /// nas-pipe's version.
    pub version: String,
    /// Where the stage computes: `cpu`, `cuda:0`, or for ONNX Runtime stages
    /// `onnxruntime 1.32.0 cpu` (the profile also names the CPU model and core count).
    pub device: String,
    /// The keys of the stages it depends on.
    pub upstream: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started and not finished: killed, failed, or running now.
    Running,
    Done,
}

/// A file's content hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHash {
    pub blake3: String,
    pub bytes: u64,
}

impl FileHash {
    /// Hashes the file at `path`; `None` when it does not exist.
    pub fn of(path: &Path) -> Result<Option<FileHash>> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mut h = blake3::Hasher::new();
        h.update_reader(file).map_err(io)?;
        Ok(Some(FileHash {
            blake3: h.finalize().to_hex().to_string(),
            bytes: h.count(),
        }))
    }
}

impl Lock {
    pub fn new(pipeline: &str) -> Lock {
        Lock {
            schema_version: SCHEMA_VERSION,
            pipeline: pipeline.to_string(),
            nas_pipe_version: env!("CARGO_PKG_VERSION").to_string(),
            stages: Vec::new(),
        }
    }

    /// Reads `<run_dir>/nas-pipe.lock`: a new, empty lock when there is none. A damaged
    /// file (empty, truncated, not a lock) is an error that says how `--force` recovers;
    /// a lock of another schema version is refused, `--force` or not.
    pub fn read(run_dir: &Path, pipeline: &str) -> Result<Lock> {
        match Lock::load(run_dir, pipeline)? {
            Ok(lock) => Ok(lock),
            Err(why) => Err(Error::Input(format!(
                "{}: not a nas-pipe lock file ({why}); it is damaged. `nas-pipe run {PIPELINE} \
                 --force` keeps it in {}/ and recomputes every stage",
                run_dir.join(FILE).display(),
                crate::run::STALE_DIR
            ))),
        }
    }

    /// [`Lock::read`] for `nas-pipe run --force`: a damaged lock file is moved into a new
    /// `stale/lock-damaged/` (returned) and a new, empty lock begun.
    pub fn read_or_set_aside(run_dir: &Path, pipeline: &str) -> Result<(Lock, Option<PathBuf>)> {
        match Lock::load(run_dir, pipeline)? {
            Ok(lock) => Ok((lock, None)),
            Err(_) => {
                let dir = crate::run::outputs::new_stale_folder(run_dir, "lock-damaged")?;
                let (from, to) = (run_dir.join(FILE), dir.join(FILE));
                std::fs::rename(&from, &to).map_err(|source| Error::Io { path: to, source })?;
                Ok((Lock::new(pipeline), Some(dir)))
            }
        }
    }

    /// The lock, or why the file is damaged; an error for one that cannot be read or is
    /// of another schema version.
    fn load(run_dir: &Path, pipeline: &str) -> Result<std::result::Result<Lock, String>> {
        let path = run_dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Ok(Lock::new(pipeline)));
            }
            Err(source) => return Err(Error::Io { path, source }),
        };
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let v: Version = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if v.schema_version != SCHEMA_VERSION {
            return Err(Error::Input(format!(
                "{}: lock file schema version {} is not the {SCHEMA_VERSION} this build of nas-pipe \
                 reads; nothing was changed. Run the nas-pipe that wrote it, or delete the file to \
                 recompute every stage",
                path.display(),
                v.schema_version
            )));
        }
        Ok(serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    }

    /// Writes the lock atomically into `run_dir`.
    pub fn write(&mut self, run_dir: &Path) -> Result<()> {
        self.nas_pipe_version = env!("CARGO_PKG_VERSION").to_string();
        self.stages.sort_by_key(|e| e.stage);
        crate::run::checkpoint::write_json(&run_dir.join(FILE), self)
    }

    pub fn get(&self, stage: Stage) -> Option<&Entry> {
        self.stages.iter().find(|e| e.stage == stage)
    }

    /// Puts `entry` in place of the stage's previous one.
    pub fn set(&mut self, entry: Entry) {
        self.stages.retain(|e| e.stage != entry.stage);
        self.stages.push(entry);
        self.stages.sort_by_key(|e| e.stage);
    }

    pub fn remove(&mut self, stage: Stage) -> Option<Entry> {
        let i = self.stages.iter().position(|e| e.stage == stage)?;
        Some(self.stages.remove(i))
    }
}
