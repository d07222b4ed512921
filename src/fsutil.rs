//! Files written so that a crash never leaves a half-written result (write a sibling temp
//! file, flush it to disk, then rename it over the target), and input files checked to be
//! regular files before they are opened. For unit tests, temp folders removed when dropped.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `path` (following links) is a regular file before it is opened for reading:
/// a FIFO blocks the open for ever, a device may never end and a directory is no input.
/// `what` names the kind of input for the message ("a spec", "an image").
pub fn regular_file(path: &Path, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_file() {
        return Err(io(path)(std::io::Error::other(format!(
            "not a regular file ({what} is read from a file, not a directory, device or pipe)"
        ))));
    }
    Ok(meta)
}

/// The temp file `write_atomic` uses for `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Renames a finished temp file into place.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(io(path))
}

/// Removes the file `path`; a file that is not there is no error.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// A fresh, empty folder for one test under the system's temp folder
/// (`nas-pipe-<tag>-<random>`), removed with its contents when dropped, unless the test is
/// failing: then it stays, and its path is printed. `.0` is its path.
#[cfg(test)]
pub(crate) struct TempDir(pub PathBuf, tempfile::TempDir);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nas-pipe-{tag}-"))
            .tempdir()
            .expect("create a temp dir");
        TempDir(dir.path().to_path_buf(), dir)
    }
}

#[cfg(test)]
impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.disable_cleanup(true);
            eprintln!("kept the failing test's folder {}", self.0.display());
        }
    }
}
