//! One writer per run folder: every command that writes into `exports/<name>/` first takes
//! an exclusive lock on `<run>/.nas-pipe.busy` (`flock`, released by the kernel when the
//! process ends, even by SIGKILL). A second command on the same folder stops at once with
//! an error naming the holder, so two runs never interleave their writes.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name in the run folder.
pub const FILE: &str = crate::run::dir::BUSY;

/// Holds the run folder until dropped. A folder the guard created and that holds nothing
/// but the lock file when it is dropped (the command failed before writing anything) is
/// removed again.
#[derive(Debug)]
pub struct Guard {
    _file: std::fs::File,
    pub path: PathBuf,
    created: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(top) = &self.created else { return };
        let Some(dir) = self.path.parent() else {
            return;
        };
        let only_lock = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().all(|e| e.file_name() == FILE))
            .unwrap_or(false);
        if only_lock {
            let _ = std::fs::remove_file(&self.path);
            // The run folder and the parents made with it, while empty.
            for d in dir.ancestors() {
                if std::fs::remove_dir(d).is_err() || d == top.as_path() {
                    break;
                }
            }
        }
    }
}

fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn holder_text(file: &mut std::fs::File) -> String {
    let mut s = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "another nas-pipe process".into()
    } else {
        s.to_string()
    }
}

/// Takes the run folder `run_dir` (created if needed) for `command` (recorded in the file,
/// with the process id and the time, for the message another process prints). Fails with
/// [`Error::Input`] when another process holds it.
pub fn acquire(run_dir: &Path, command: &str) -> Result<Guard> {
    // The outermost folder this call creates.
    let created = run_dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(run_dir).map_err(|source| Error::Io {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let path = run_dir.join(FILE);
    let mut file = open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::Input(format!(
                "{} is in use by {}; wait for it to finish (or stop it) and run again",
                run_dir.display(),
                holder_text(&mut file)
            )));
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(Error::Io { path, source }),
    }
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(
        file,
        "`{command}` (pid {}, since {})",
        std::process::id(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    )
    .map_err(io)?;
    Ok(Guard {
        _file: file,
        path,
        created,
    })
}

/// Who holds `run_dir` now, if anyone (for `nas-pipe status`); takes nothing.
pub fn holder(run_dir: &Path) -> Option<String> {
    let path = run_dir.join(FILE);
    let mut file = std::fs::OpenOptions::new().read(true).open(path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => Some(holder_text(&mut file)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let tmp = crate::fsutil::TempDir::new("busy");
        let dir = tmp.join("busy");
        let first = acquire(&dir, "nas-pipe run a.ron").unwrap();
        assert!(holder(&dir).unwrap().contains("nas-pipe run a.ron"));
        let err = acquire(&dir, "nas-pipe run b.ron").unwrap_err().to_string();
        assert!(
            err.contains("is in use by `nas-pipe run a.ron` (pid"),
            "{err}"
        );
        drop(first);
        assert_eq!(holder(&dir), None);
        let again = acquire(&dir, "nas-pipe run b.ron").unwrap();
        drop(again);
        // The guard made the folder and nothing was written: it is gone again.
        assert!(!dir.exists());
    }
}
