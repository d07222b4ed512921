//! JSON files sealed with a blake3 checksum, the previous copy kept beside the resumable
//! ones, and the fall-back to it when the newest is damaged.
//!
//! A sealed file is the pretty JSON of a value with one more top-level field, `blake3`:
//! the hex blake3 of the value's compact JSON (`serde_json::Value` order, without that
//! field). Reading derives it again from the parsed value, so a flipped byte, a truncation
//! or a hand edit of any value is caught, while whitespace is not significant. Every
//! sealed file has a `version`; a file of an earlier version has no checksum and is
//! refused with a message saying so, never trusted unchecked.
//!
//! A damaged file is never used, never lost and never a panic: a resumable file is moved
//! to `stale/damaged-…/` and its previous copy is used, with a warning naming both; with no
//! sound copy the error names the files and the way out.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsutil::{commit, temp_path, write_atomic};

/// The checksum's field.
pub const FIELD: &str = "blake3";

/// The pretty JSON of `value` (an object with a `version`) with its checksum.
pub fn seal<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(value).map_err(|e| Error::Input(e.to_string()))?;
    let sum = checksum(&v);
    let Value::Object(map) = &mut v else {
        return Err(Error::Input("only a JSON object can be sealed".into()));
    };
    map.insert(FIELD.into(), Value::String(sum));
    let mut text = serde_json::to_vec_pretty(&v).map_err(|e| Error::Input(e.to_string()))?;
    text.push(b'\n');
    Ok(text)
}

fn checksum(v: &Value) -> String {
    // `to_vec` of a `Value` cannot fail: its keys are strings.
    blake3::hash(&serde_json::to_vec(v).unwrap_or_default())
        .to_hex()
        .to_string()
}

/// Why a sealed file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealed {
    /// Not JSON, no sound checksum, or not the type: the file was damaged or edited.
    Damaged(String),
    /// A sound file of another format version (`version` as found; 0 when absent).
    Version(u64),
}

/// Reads a sealed file's bytes as a `T` of format `version`.
pub fn unseal<T: DeserializeOwned>(bytes: &[u8], version: u32) -> Result<T, Unsealed> {
    let damaged = |why: String| Unsealed::Damaged(why);
    let mut v: Value =
        serde_json::from_slice(bytes).map_err(|e| damaged(format!("is not JSON ({e})")))?;
    let Value::Object(map) = &mut v else {
        return Err(damaged("is not a JSON object".into()));
    };
    let found = map.get("version").and_then(Value::as_u64).unwrap_or(0);
    let Some(sum) = map.remove(FIELD) else {
        return Err(if found < u64::from(version) {
            Unsealed::Version(found)
        } else {
            damaged(format!("has no `{FIELD}` checksum"))
        });
    };
    let now = checksum(&v);
    if sum.as_str() != Some(now.as_str()) {
        return Err(damaged(format!(
            "does not match its checksum (blake3 {}…, the file records {}…): it was edited or damaged",
            &now[..12],
            sum.as_str()
                .map_or("no text".into(), |s| s.chars().take(12).collect::<String>())
        )));
    }
    if found != u64::from(version) {
        return Err(Unsealed::Version(found));
    }
    serde_json::from_value(v).map_err(|e| damaged(format!("is not the expected record ({e})")))
}

/// Writes `value` sealed to `path`, atomically.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &seal(value)?)
}

/// A resumable sealed file and the previous copy kept beside it.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The run folder (whose `stale/` takes damaged files).
    pub run_dir: PathBuf,
    pub latest: PathBuf,
    pub previous: PathBuf,
    /// What the file is, for messages ("search record").
    pub what: &'static str,
    /// How to start over, for messages.
    pub advice: String,
}

impl Kept {
    /// Writes `value` as the latest copy, first copying the latest one (when there is one)
    /// to the previous; both steps are atomic, so a crash leaves two sound copies.
    pub fn write<T: Serialize>(&self, value: &T) -> Result<()> {
        if self.latest.is_file() {
            let tmp = temp_path(&self.previous);
            std::fs::copy(&self.latest, &tmp).map_err(|source| Error::Io {
                path: tmp.clone(),
                source,
            })?;
            commit(&tmp, &self.previous)?;
        }
        write(&self.latest, value)
    }

    /// The newest sound copy, `None` when there is neither. A damaged latest copy is moved
    /// to `stale/` and the previous one used, with a warning; a copy of another version is
    /// an error (nothing is moved).
    pub fn read<T: DeserializeOwned>(&self, version: u32) -> Result<Option<T>> {
        let candidates = [self.latest.clone(), self.previous.clone()];
        if !candidates.iter().any(|p| p.exists()) {
            return Ok(None);
        }
        let mut refused = None;
        let (found, failed) = crate::run::checkpoint::first_sound(&candidates, |_, path| {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot be read ({e})"))?;
            unseal::<T>(&bytes, version).map_err(|u| match u {
                Unsealed::Damaged(why) => why,
                Unsealed::Version(v) => {
                    refused.get_or_insert((path.to_path_buf(), v));
                    format!("is of version {v}")
                }
            })
        });
        if let Some((path, v)) = refused {
            return Err(self.old_version(&path, v, version));
        }
        let Some((i, value)) = found else {
            return Err(Error::Input(format!(
                "{}; no sound copy of the {} is left; nothing was moved. {}",
                failed.join("; "),
                self.what,
                self.advice
            )));
        };
        if i > 0 {
            crate::run::checkpoint::fall_back(
                &self.run_dir,
                &candidates,
                failed,
                &self.previous.display().to_string(),
            )?;
        }
        Ok(Some(value))
    }

    fn old_version(&self, path: &Path, found: u64, version: u32) -> Error {
        Error::Input(format!(
            "{}: {} version {found} is not the {version} this build writes{}; nothing was \
             overwritten. {}",
            path.display(),
            self.what,
            if found < u64::from(version) {
                " (earlier versions carry no checksum, so it cannot be checked and is not resumed)"
            } else {
                ""
            },
            self.advice
        ))
    }
}

/// Moves `path` (a file of the run folder `run_dir`) into a new `stale/damaged-<name>/`,
/// under its path relative to the run folder; returns where it went.
pub fn keep_damaged(run_dir: &Path, path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy().into_owned());
    let dir = crate::run::outputs::new_stale_folder(run_dir, &format!("damaged-{name}"))?;
    let to = dir.join(path.strip_prefix(run_dir).unwrap_or(Path::new(&name)));
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::rename(path, &to).map_err(|source| Error::Io {
        path: to.clone(),
        source,
    })?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct S {
        version: u32,
        x: f64,
        names: Vec<String>,
    }

    fn s() -> S {
        S {
            version: 2,
            x: 0.1 + 0.2,
            names: vec!["a".into(), "é".into()],
        }
    }

    #[test]
    fn a_sealed_value_reads_back_and_any_edit_is_caught() {
        let bytes = seal(&s()).unwrap();
        assert_eq!(unseal::<S>(&bytes, 2), Ok(s()));
        let text = String::from_utf8(bytes).unwrap();
        // Whitespace is not significant; values are.
        let compact = text.replace("\n", "").replace("  ", "");
        assert_eq!(unseal::<S>(compact.as_bytes(), 2), Ok(s()));
        let edited = text.replace("\"a\"", "\"b\"");
        assert!(matches!(
            unseal::<S>(edited.as_bytes(), 2),
            Err(Unsealed::Damaged(_))
        ));
        let cut = &text.as_bytes()[..text.len() / 2];
        assert!(matches!(unseal::<S>(cut, 2), Err(Unsealed::Damaged(_))));
        assert_eq!(unseal::<S>(text.as_bytes(), 3), Err(Unsealed::Version(2)));
    }

    #[test]
    fn an_earlier_version_without_checksum_is_a_version_error() {
        let old = br#"{"version": 1, "x": 1.0, "names": []}"#;
        assert_eq!(unseal::<S>(old, 2), Err(Unsealed::Version(1)));
        let stripped = br#"{"version": 2, "x": 1.0, "names": []}"#;
        assert!(matches!(
            unseal::<S>(stripped, 2),
            Err(Unsealed::Damaged(_))
        ));
    }
}
