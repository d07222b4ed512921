//! The decoded-image cache of the image sources, in a run folder's `data/cache/`.
//!
//! One part of a source (e.g. its training images) is two files named after the part and
//! its key ([`super::listing::Listing::key`]: file list, sizes, modification times, image
//! options): `<part>-<key>.bin` holds the u8 images `[N, C, H, W]` then the labels as
//! little-endian u32 `[N]`, and `<part>-<key>.json` says what the `.bin` holds (and which
//! files were skipped). A hit needs both files, the same key and shape, and a `.bin` of
//! exactly the declared length; the images are then memory-mapped, not read. Both files
//! are written through a temporary file and a rename; older entries of the same part are
//! removed when a new one is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::decode::Skipped;
use super::{Dataset, data_err};
use crate::error::{Error, Result};
use crate::spec::space::Input;

/// The cache's folder inside the run folder's `data/`.
pub const DIR: &str = "cache";
const VERSION: u32 = 1;

/// What a `.bin` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meta {
    version: u32,
    key: String,
    images: usize,
    channels: u32,
    size: u32,
    classes: u32,
    skipped: Vec<Skipped>,
}

/// The two files of one part's entry.
fn files(folder: &Path, what: &str, key: &str) -> (PathBuf, PathBuf) {
    let base = folder
        .join(DIR)
        .join(format!("{}-{}", slug(what), &key[..key.len().min(24)]));
    (base.with_extension("bin"), base.with_extension("json"))
}

/// A file-name-safe form of a part's name: `my data train` → `my-data-train`.
fn slug(what: &str) -> String {
    what.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The cached part under `key`, memory-mapped, with the files its decoding skipped; `None`
/// when there is no valid entry.
pub fn load(
    folder: &Path,
    what: &str,
    key: &str,
    input: Input,
) -> Result<Option<(Dataset, Vec<Skipped>)>> {
    let (bin, json) = files(folder, what, key);
    let Some(meta) = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
    else {
        return Ok(None);
    };
    let expect = (VERSION, key, input.channels, input.size, input.classes);
    if (
        meta.version,
        meta.key.as_str(),
        meta.channels,
        meta.size,
        meta.classes,
    ) != expect
    {
        return Ok(None);
    }
    let Ok(file) = std::fs::File::open(&bin) else {
        return Ok(None);
    };
    let per = super::image_len(input);
    let pixels = meta.images.saturating_mul(per);
    let len = pixels.saturating_add(meta.images.saturating_mul(4));
    if file.metadata().map(|m| m.len()).ok() != Some(len as u64) {
        return Ok(None);
    }
    // The map is read-only and the file is replaced by rename, never written in place.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| data_err(&bin, format!("cannot map the cached images: {e}")))?;
    let labels = map[pixels..]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let pixels = super::Pixels::mapped(Arc::new(map), pixels);
    match Dataset::from_pixels(what.to_string(), input, pixels, labels) {
        Ok(d) => Ok(Some((d, meta.skipped))),
        // A damaged entry is decoded again, not trusted.
        Err(_) => Ok(None),
    }
}

/// What a part's reading gives: its images and the files (or elements) left out.
pub type Part = (Dataset, Vec<Skipped>);

/// The part `what`: from the cache in `folder` when an entry under the key `key` gives
/// holds, else made by `make` and stored there. Without a folder, `make` alone.
pub fn get_or_make(
    folder: Option<&Path>,
    what: &str,
    key: impl FnOnce() -> Result<String>,
    input: Input,
    make: impl FnOnce() -> Result<Part>,
) -> Result<Part> {
    let Some(folder) = folder else {
        return make();
    };
    let key = key()?;
    if let Some(hit) = load(folder, what, &key, input)? {
        return Ok(hit);
    }
    let made = make()?;
    store(folder, what, &key, &made.0, &made.1)?;
    Ok(made)
}

/// Writes `data` as the entry of `what` under `key`, and removes older entries of `what`.
pub fn store(
    folder: &Path,
    what: &str,
    key: &str,
    data: &Dataset,
    skipped: &[Skipped],
) -> Result<()> {
    let dir = folder.join(DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| data_err(&dir, format!("cannot create the cache folder: {e}")))?;
    let (bin, json) = files(folder, what, key);
    let pixels = data.images();
    let mut bytes = Vec::with_capacity(pixels.len() + 4 * data.len());
    bytes.extend_from_slice(&pixels);
    for l in data.labels() {
        bytes.extend_from_slice(&l.to_le_bytes());
    }
    let meta = Meta {
        version: VERSION,
        key: key.to_string(),
        images: data.len(),
        channels: data.input().channels,
        size: data.input().size,
        classes: data.input().classes,
        skipped: skipped.to_vec(),
    };
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Input(e.to_string()))?;
    remove_older(&dir, &slug(what), &bin)?;
    crate::fsutil::write_atomic(&bin, &bytes)?;
    crate::fsutil::write_atomic(&json, format!("{text}\n").as_bytes())
}

/// Removes the entries of part `slug` other than `keep`.
fn remove_older(dir: &Path, slug: &str, keep: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| data_err(dir, format!("cannot list the cache: {e}")))?;
    let keep_stem = keep.file_stem().map(|s| s.to_owned());
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some(rest) = stem.strip_prefix(slug).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        // `<slug>-<key>`: a key is hexadecimal, so `train` never removes `train-x-...`.
        if rest.chars().all(|c| c.is_ascii_hexdigit())
            && Some(path.file_stem().unwrap_or_default().to_owned()) != keep_stem
        {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;

    #[test]
    fn round_trip_and_invalidation() {
        let d = TempDir::new("cache");
        let input = Input {
            channels: 1,
            size: 2,
            classes: 3,
        };
        let data = Dataset::new("t train", input, (0..8).collect(), vec![2, 1]).unwrap();
        let skipped = vec![Skipped {
            path: "x.png".into(),
            row: Some(3),
            index: None,
            reason: "bad".into(),
        }];
        assert!(load(&d.0, "t train", "abc1", input).unwrap().is_none());
        store(&d.0, "t train", "abc1", &data, &skipped).unwrap();
        let (hit, s) = load(&d.0, "t train", "abc1", input).unwrap().unwrap();
        assert_eq!(hit.images(), data.images());
        assert_eq!(hit.labels(), &[2, 1]);
        assert_eq!(hit.image(1), &[4, 5, 6, 7]);
        assert_eq!(s, skipped);
        assert!(load(&d.0, "t train", "abc2", input).unwrap().is_none());
        let other = Input {
            classes: 4,
            ..input
        };
        assert!(load(&d.0, "t train", "abc1", other).unwrap().is_none());
        // A new key replaces the old entry; a truncated .bin is a miss.
        store(&d.0, "t train", "abc2", &data, &[]).unwrap();
        assert!(!files(&d.0, "t train", "abc1").0.exists());
        let (bin, _) = files(&d.0, "t train", "abc2");
        let bytes = std::fs::read(&bin).unwrap();
        std::fs::write(&bin, &bytes[..bytes.len() - 1]).unwrap();
        assert!(load(&d.0, "t train", "abc2", input).unwrap().is_none());
    }
}
