//! Safetensors files of named tensors and the JSON state files beside them, shared by the
//! search and retrain stages.
//!
//! A checkpoint is one safetensors file whose tensor names are `<group>.<name>` (e.g.
//! `weights.layers.0.conv.weight`, `opt.layers.0.conv.weight.momentum`); a weights file
//! (`last.safetensors`) holds a model's parameters and buffers under their own names. Every
//! write is atomic (temp file, then rename). Reading checks names and shapes against what
//! the network expects and names the offending entry.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::fsutil::{commit, temp_path, write_atomic};

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

/// A stage's state file: a format version, the hash of the spec that made it, and the
/// checkpoint of the last finished epoch.
pub trait StateFile: Serialize + DeserializeOwned {
    const VERSION: u32;
    fn version(&self) -> u32;
    fn spec_hash(&self) -> &str;
    /// Records `epochs_done` and its checkpoint file name; returns the previous file name.
    fn advance(&mut self, epochs_done: usize, checkpoint: String) -> String;
}

/// Ends an epoch: writes `tensors` as `<dir>/checkpoint-<epochs_done>.safetensors`, then the
/// state file (`<dir>/state.json`) pointing at it, then removes the previous checkpoint. A
/// crash at any point leaves a state file that names a complete checkpoint.
pub fn commit_epoch<S: StateFile>(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    state: &mut S,
    epochs_done: usize,
) -> Result<()> {
    let name = format!("checkpoint-{epochs_done}.safetensors");
    save(&dir.join(&name), tensors)?;
    let previous = state.advance(epochs_done, name.clone());
    write_json(&dir.join("state.json"), state)?;
    if !previous.is_empty() && previous != name {
        let _ = std::fs::remove_file(dir.join(previous));
    }
    Ok(())
}

/// Reads the state file at `path`: `None` when there is none; an error when it is not a
/// state file, has another version, or was made by another spec (`hash`). `stage` names
/// the stage in messages and `dir` is the folder to delete to start over.
pub fn read_state<S: StateFile>(
    path: &Path,
    hash: &str,
    stage: &str,
    dir: &Path,
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
    let state: S = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Input(format!("{}: not a {stage} state file: {e}", path.display())))?;
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
            "{}: this checkpoint was made by a different spec; nothing was overwritten. \
             Delete {} to run the {stage} again from scratch",
            path.display(),
            dir.display()
        )));
    }
    Ok(Some(state))
}

/// Writes a state file atomically as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Input(e.to_string()))?;
    write_atomic(path, &json)
}
