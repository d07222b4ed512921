//! Safetensors files of named tensors and the JSON state files beside them, shared by the
//! search and retrain stages.
//!
//! A checkpoint is one safetensors file whose tensor names are `<group>.<name>` (e.g.
//! `weights.layers.0.conv.weight`, `opt.layers.0.conv.weight.momentum`); a weights file
//! (`last.safetensors`) holds a model's parameters and buffers under their own names. Every
//! write is atomic (temp file, then rename). Reading checks names and shapes against what
//! the network expects and names the offending entry.

use crate::run::PIPELINE;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::fsutil::{commit, temp_path, write_atomic};
use crate::run::lock::FileHash;

/// Writes `tensors` to `path` atomically.
pub fn save(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let tmp = temp_path(path);
    candle_core::safetensors::save(tensors, &tmp)
        .map_err(|e| Error::Input(format!("{}: {e}", tmp.display())))?;
    commit(&tmp, path)
}

/// Adds `vars` to `tensors` as `<prefix>.<name>` (just `<name>` for an empty prefix).
pub fn put(tensors: &mut HashMap<String, Tensor>, prefix: &str, vars: &[(String, Var)]) {
    for (n, v) in vars {
        tensors.insert(key(prefix, n), v.as_tensor().clone());
    }
}

fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A safetensors file read into memory.
pub struct Loaded {
    pub path: std::path::PathBuf,
    pub tensors: HashMap<String, Tensor>,
}

/// Reads `path` onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<Loaded> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
        Error::Input(format!(
            "{}: cannot read the tensors: {}",
            path.display(),
            crate::error::candle_message(&e)
        ))
    })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        tensors,
    })
}

impl Loaded {
    /// Sets each of `vars` from the tensor `<prefix>.<name>`; a missing name or a shape that
    /// differs is an error naming the entry.
    pub fn set(&self, prefix: &str, vars: &[(String, Var)]) -> Result<()> {
        for (n, v) in vars {
            let k = key(prefix, n);
            let t = self.tensors.get(&k).ok_or_else(|| {
                Error::Input(format!(
                    "{}: `{k}` is missing; the file was made for another architecture or build",
                    self.path.display()
                ))
            })?;
            if t.dims() != v.dims() {
                return Err(Error::Input(format!(
                    "{}: `{k}` has shape {:?}, but this architecture's `{n}` has shape {:?}",
                    self.path.display(),
                    t.dims(),
                    v.dims()
                )));
            }
            let t = t.to_dtype(v.dtype()).map_err(|e| self.err(&k, e))?;
            v.set(&t).map_err(|e| self.err(&k, e))?;
        }
        Ok(())
    }

    /// Like [`Loaded::set`] for a whole network, and also an error when the file holds a
    /// tensor the network does not have (a file for another architecture).
    pub fn set_exact(&self, vars: &[(String, Var)]) -> Result<()> {
        self.set("", vars)?;
        let known: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .collect();
        extra.sort();
        if let Some(first) = extra.first() {
            return Err(Error::Input(format!(
                "{}: `{first}`{} is not part of this architecture; the weights were trained for another one",
                self.path.display(),
                if extra.len() > 1 {
                    format!(" (and {} more)", extra.len() - 1)
                } else {
                    String::new()
                }
            )));
        }
        Ok(())
    }

    /// The tensors under `<prefix>.`, with the prefix removed.
    pub fn group(&self, prefix: &str) -> HashMap<String, Tensor> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.clone())))
            .collect()
    }

    fn err(&self, k: &str, e: candle_core::Error) -> Error {
        Error::Input(format!(
            "{}: `{k}`: {}",
            self.path.display(),
            crate::error::candle_message(&e)
        ))
    }
}

/// How many checkpoints a state file keeps: the newest, and the one before it to fall back
/// on when the newest is damaged.
pub const KEEP: usize = 2;

/// A checkpoint the state file keeps, with the blake3 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Kept {
    pub file: String,
    pub epochs_done: usize,
    pub blake3: String,
}

/// A stage's state file: a format version, the hash of the spec that made it, the
/// checkpoint of the last finished epoch and the checkpoints it keeps.
pub trait StateFile: Serialize + DeserializeOwned {
    const VERSION: u32;
    fn version(&self) -> u32;
    fn spec_hash(&self) -> &str;
    /// Epochs finished, and epochs whose figures the file holds (the same in a sound file).
    fn epochs(&self) -> (usize, usize);
    /// The newest checkpoint's file name (empty before the first).
    fn checkpoint(&self) -> &str;
    /// The kept checkpoints, oldest first (empty in a file of an earlier build).
    fn kept(&self) -> &[Kept];
    fn kept_mut(&mut self) -> &mut Vec<Kept>;
    /// Records `epochs_done` and its checkpoint file name; forgets the figures of epochs
    /// after `epochs_done` (when going back to an earlier checkpoint).
    fn set_epochs(&mut self, epochs_done: usize, checkpoint: String);
}

/// Ends an epoch: writes `tensors` as `<dir>/checkpoint-<epochs_done>.safetensors`, then the
/// state file (`<dir>/state.json`) pointing at it with its hash, then removes the
/// checkpoints it no longer keeps. A crash at any point leaves a state file that names
/// complete checkpoints.
pub fn commit_epoch<S: StateFile>(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    state: &mut S,
    epochs_done: usize,
) -> Result<()> {
    let name = format!("checkpoint-{epochs_done}.safetensors");
    let path = dir.join(&name);
    save(&path, tensors)?;
    let hash = FileHash::of(&path)?.ok_or_else(|| Error::Io {
        path: path.clone(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    state.set_epochs(epochs_done, name.clone());
    let kept = state.kept_mut();
    kept.retain(|k| k.file != name);
    kept.push(Kept {
        file: name,
        epochs_done,
        blake3: hash.blake3,
    });
    let drop = kept.len().saturating_sub(KEEP);
    kept.drain(..drop);
    write_json(&dir.join("state.json"), state)?;
    remove_unkept(dir, state)
}

/// Removes the checkpoint files of `dir` that `state` does not keep.
fn remove_unkept<S: StateFile>(dir: &Path, state: &S) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_checkpoint = name.starts_with("checkpoint-") && name.ends_with(".safetensors");
        if is_checkpoint
            && name != state.checkpoint()
            && !state.kept().iter().any(|k| k.file == name)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Puts a resumed stage (its folder `dir` in the run folder `run_dir`) back at its newest
/// sound checkpoint: `load` reads a checkpoint into the network and optimisers. A
/// checkpoint whose bytes differ from the hash the state file recorded, or that does not
/// load, is moved to `stale/damaged-<file>/` and passed over, with a warning naming where
/// it is kept, for the one kept before it, whose epoch the state goes back to (epochs are
/// seeded per epoch, so the result is the same). With none left, nothing is moved and the
/// error names the file and `advice`.
pub fn resume<S: StateFile>(
    run_dir: &Path,
    dir: &Path,
    state: &mut S,
    advice: &str,
    mut load: impl FnMut(&Path) -> Result<()>,
) -> Result<()> {
    let mut candidates: Vec<(String, usize, Option<String>)> = state
        .kept()
        .iter()
        .rev()
        .map(|k| (k.file.clone(), k.epochs_done, Some(k.blake3.clone())))
        .collect();
    if candidates.is_empty() {
        candidates.push((state.checkpoint().to_string(), state.epochs().0, None));
    }
    let paths: Vec<std::path::PathBuf> = candidates.iter().map(|(f, _, _)| dir.join(f)).collect();
    let (found, failed) = first_sound(&paths, |i, path| {
        match (
            FileHash::of(path).map_err(|e| e.to_string())?,
            &candidates[i].2,
        ) {
            (None, _) => Err("is missing".to_string()),
            (Some(now), Some(want)) if &now.blake3 != want => Err(format!(
                "changed since it was written (blake3 {}…, the state file recorded {}…)",
                crate::run::outputs::short(&now.blake3),
                crate::run::outputs::short(want)
            )),
            _ => load(path).map_err(|e| format!("does not load: {e}")),
        }
    });
    if let Some((i, ())) = found {
        if i > 0 {
            let (file, epochs_done, _) = &candidates[i];
            fall_back(
                run_dir,
                &paths,
                failed,
                &format!("{} (after epoch {epochs_done})", paths[i].display()),
            )?;
            state.set_epochs(*epochs_done, file.clone());
            state.kept_mut().retain(|k| k.epochs_done <= *epochs_done);
        }
        return Ok(());
    }
    Err(Error::Input(format!(
        "{}; no sound checkpoint is left to resume from. {advice}",
        failed.join("; ")
    )))
}

/// Tries `candidates`, newest first, with `load` (given the index and path): the first
/// that loads, with its index, and why each one before it was passed over (`<path> <why>`).
pub fn first_sound<T>(
    candidates: &[std::path::PathBuf],
    mut load: impl FnMut(usize, &Path) -> std::result::Result<T, String>,
) -> (Option<(usize, T)>, Vec<String>) {
    let mut failed = Vec::new();
    for (i, path) in candidates.iter().enumerate() {
        match load(i, path) {
            Ok(t) => return (Some((i, t)), failed),
            Err(why) => failed.push(format!("{} {why}", path.display())),
        }
    }
    (None, failed)
}

/// After [`first_sound`] passed over `candidates[..failed.len()]` (why: `failed`) for
/// `instead`: moves each of them that exists into a new `stale/damaged-<file>/` of the run
/// folder `run_dir`, so that redoing its epoch never overwrites it, and warns, naming
/// where each is kept.
pub fn fall_back(
    run_dir: &Path,
    candidates: &[std::path::PathBuf],
    mut failed: Vec<String>,
    instead: &str,
) -> Result<()> {
    for (path, why) in candidates.iter().zip(failed.iter_mut()) {
        if path.exists() {
            let kept = crate::run::sealed::keep_damaged(run_dir, path)?;
            *why += &format!(" (kept in {})", kept.display());
        }
    }
    crate::progress::note(&format!(
        "warning: {}; resuming from {instead} instead",
        failed.join("; ")
    ));
    Ok(())
}

/// Reads the state file at `path`: `None` when there is none; an error when it is not a
/// state file, has another version, was made by another spec (`hash`), or records more
/// epochs than the spec's `epochs` or than its own figures. `stage` names the stage in
/// messages and `advice` says how to start it over.
pub fn read_state<S: StateFile>(
    path: &Path,
    hash: &str,
    stage: &str,
    epochs: usize,
    advice: &str,
) -> Result<Option<S>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let state: S = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Input(format!(
            "{}: not a {stage} state file ({e}); nothing was overwritten. {advice}",
            path.display()
        ))
    })?;
    if state.version() != S::VERSION {
        return Err(Error::Input(format!(
            "{}: {stage} state version {} is not the {} this build writes; nothing was overwritten",
            path.display(),
            state.version(),
            S::VERSION
        )));
    }
    if state.spec_hash() != hash {
        return Err(Error::Input(format!(
            "{}: this checkpoint was made by a different spec; nothing was overwritten. {advice}",
            path.display(),
        )));
    }
    let (done, recorded) = state.epochs();
    if done > epochs || done != recorded {
        return Err(Error::Input(format!(
            "{}: records {done} epochs finished and the figures of {recorded}, but the spec plans \
             {epochs}: the file was edited or damaged; nothing was overwritten. {advice}",
            path.display(),
        )));
    }
    Ok(Some(state))
}

/// How to start a resuming stage (`search`, `retrain`) with its folder `dir` over.
pub fn restart_advice(stage: &str, dir: &Path) -> String {
    format!(
        "Start the {stage} over with `nas-pipe run {PIPELINE} --from {stage}` (it keeps {} in {}/), \
         or move that folder away",
        dir.display(),
        crate::run::STALE_DIR
    )
}

/// Writes a state file atomically as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Input(e.to_string()))?;
    write_atomic(path, &json)
}
