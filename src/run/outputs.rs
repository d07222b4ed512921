//! A stage's outputs in the run folder: listing and hashing them, refusing to read one whose
//! content is not what the lock file recorded, and setting them aside in `stale/` before
//! anything replaces them.
//!
//! `stale/` only grows: every set-aside goes into a new folder `stale/<name>[-N]/`, and
//! nothing in it is ever overwritten. A folder of outputs that came out byte for byte the
//! same again is removed, since it keeps nothing the run folder does not.

use crate::run::PIPELINE;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::lock::{Entry, FileHash, Lock, Status};
use crate::run::{STALE_DIR, Stage};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The first 12 hex digits of a hash or key, as messages and folder names show it.
pub fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// `write_atomic`'s temp files: `<name>.tmp<pid>`.
pub fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once(".tmp"))
        .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The hash of every file of `files` (relative to `root`) that exists.
pub fn hash_files(root: &Path, files: &[String]) -> Result<BTreeMap<String, FileHash>> {
    let mut out = BTreeMap::new();
    for f in files {
        if let Some(h) = FileHash::of(&root.join(f))? {
            out.insert(f.clone(), h);
        }
    }
    Ok(out)
}

/// Files under the stage's territory in `root` (a run folder, or a folder of `stale/`),
/// relative to it, temp files left out.
pub fn territory_files(root: &Path, stage: Stage) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in stage.territory() {
        walk(root, Path::new(t), &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// The hashes of the stage's files in `root`.
pub fn territory_hashes(root: &Path, stage: Stage) -> Result<BTreeMap<String, FileHash>> {
    hash_files(root, &territory_files(root, stage)?)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    let path = root.join(rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path, source }),
    };
    if meta.is_dir() {
        let rd = std::fs::read_dir(&path).map_err(io(&path))?;
        for e in rd {
            let e = e.map_err(io(&path))?;
            walk(root, &rel.join(e.file_name()), out)?;
        }
    } else if !is_temp(rel) {
        out.push(rel.to_string_lossy().replace('\\', "/"));
    }
    Ok(())
}

/// Refuses (exit code 2) to read any of `paths` (files of the run folder `run_dir`; paths
/// outside it are not checked) whose content differs from the hash the lock file recorded
/// when a stage of `nas-pipe run` wrote it. A file the lock does not record, or that is
/// missing, is left to the reader. The message names the file, the stage that wrote it and
/// the two ways out: restore the file, or recompute it with `--from <stage>`.
pub fn verify(run_dir: &Path, paths: &[PathBuf]) -> Result<()> {
    let lock = Lock::read(run_dir, "")?;
    for path in paths {
        let rel = match path.strip_prefix(run_dir) {
            Ok(r) => r.to_string_lossy().replace('\\', "/"),
            Err(_) => continue,
        };
        let Some((stage, recorded)) = lock
            .stages
            .iter()
            .filter(|e| e.status == Status::Done)
            .find_map(|e| e.outputs.get(&rel).map(|h| (e.stage, h)))
        else {
            continue;
        };
        match FileHash::of(path)? {
            Some(now) if &now != recorded => {
                return Err(Error::Input(changed(path, stage, recorded, &now)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The message for a file whose content is not what its stage wrote.
fn changed(path: &Path, stage: Stage, recorded: &FileHash, now: &FileHash) -> String {
    format!(
        "{} changed since the {stage} stage wrote it (blake3 {}…, {} bytes; the lock file \
         recorded {}…, {} bytes); nothing was read. Restore the file, or recompute it with \
         `nas-pipe run {PIPELINE} --from {stage}` (the changed file is kept in {STALE_DIR}/)",
        path.display(),
        short(&now.blake3),
        now.bytes,
        short(&recorded.blake3),
        recorded.bytes
    )
}

/// A new, empty folder `stale/<base>` (`<base>-2`, `<base>-3`, … when taken).
pub fn new_stale_folder(run_dir: &Path, base: &str) -> Result<PathBuf> {
    let stale = run_dir.join(STALE_DIR);
    let mut dir = stale.join(base);
    let mut n = 2;
    while dir.exists() {
        dir = stale.join(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// Moves the stage's outputs into a new `stale/<stage>-<key>/` (`<stage>-untracked` when no
/// lock entry describes them) with `entry.json`; `None` when there is nothing to move.
pub fn set_aside(run_dir: &Path, stage: Stage, entry: Option<&Entry>) -> Result<Option<PathBuf>> {
    let present: Vec<&str> = stage
        .territory()
        .iter()
        .copied()
        .filter(|t| run_dir.join(t).exists())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let base = match entry {
        Some(e) => format!("{stage}-{}", short(&e.key)),
        None => format!("{stage}-untracked"),
    };
    let dir = new_stale_folder(run_dir, &base)?;
    if let Some(e) = entry {
        crate::run::checkpoint::write_json(&dir.join("entry.json"), e)?;
    }
    for t in present {
        let to = dir.join(t);
        std::fs::rename(run_dir.join(t), &to).map_err(io(&to))?;
    }
    Ok(Some(dir))
}

/// Copies the stage's output files into a new `stale/<stage>-<label>/`, for a command that
/// is about to replace them in place; `None` when there are none.
pub fn copy_aside(run_dir: &Path, stage: Stage, label: &str) -> Result<Option<PathBuf>> {
    let files = territory_files(run_dir, stage)?;
    if files.is_empty() {
        return Ok(None);
    }
    let dir = new_stale_folder(run_dir, &format!("{stage}-{label}"))?;
    for f in &files {
        let to = dir.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(run_dir.join(f), &to).map_err(io(&to))?;
    }
    Ok(Some(dir))
}

/// After the stage wrote its outputs again: removes the set-aside folder `kept` when it
/// holds exactly the stage's files as they are now (it keeps nothing); returns whether it
/// is still there.
pub fn keep_if_different(run_dir: &Path, stage: Stage, kept: &Path) -> Result<bool> {
    if territory_hashes(kept, stage)? == territory_hashes(run_dir, stage)? {
        std::fs::remove_dir_all(kept).map_err(io(kept))?;
        return Ok(false);
    }
    Ok(true)
}

/// After a single-stage command rewrote the stage's outputs: removes the stage's lock entry
/// when they are no longer the ones it records (the lock vouches only for what
/// `nas-pipe run` wrote; the next run computes the stage again).
pub fn forget_if_replaced(run_dir: &Path, stage: Stage) -> Result<()> {
    if !run_dir.join(crate::run::lock::FILE).exists() {
        return Ok(());
    }
    let mut lock = Lock::read(run_dir, "")?;
    let Some(entry) = lock.get(stage) else {
        return Ok(());
    };
    if entry.outputs != territory_hashes(run_dir, stage)? {
        lock.remove(stage);
        lock.write(run_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_recognised() {
        assert!(is_temp(Path::new("retrain/last.safetensors.tmp1234")));
        assert!(!is_temp(Path::new("retrain/last.safetensors")));
        assert!(!is_temp(Path::new("a.tmp")));
        assert!(!is_temp(Path::new("a.tmpx1")));
    }

    #[test]
    fn a_copy_aside_is_dropped_only_when_nothing_changed() {
        let tmp = crate::fsutil::TempDir::new("outputs");
        let run = tmp.join("outputs");
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        let onnx = run.join(crate::run::dir::MODEL_ONNX);
        std::fs::write(&onnx, b"old").unwrap();
        let kept = copy_aside(&run, Stage::Export, "replaced")
            .unwrap()
            .unwrap();
        assert!(!keep_if_different(&run, Stage::Export, &kept).unwrap());
        assert!(!kept.exists());
        let kept = copy_aside(&run, Stage::Export, "replaced")
            .unwrap()
            .unwrap();
        std::fs::write(&onnx, b"new").unwrap();
        assert!(keep_if_different(&run, Stage::Export, &kept).unwrap());
        assert_eq!(std::fs::read(kept.join("model.onnx")).unwrap(), b"old");
        // A second set-aside under the same name gets a folder of its own.
        assert!(
            copy_aside(&run, Stage::Export, "replaced")
                .unwrap()
                .unwrap()
                .ends_with("export-replaced-2")
        );
        std::fs::remove_dir_all(&run).unwrap();
    }
}
