//! What an image source lists before anything is decoded ([`Listing`]: files, labels, class
//! names per part), its key (file list, sizes, modification times and the image options),
//! and turning a listing into a [`Source`]: decoded once in parallel, then loaded from the
//! cache ([`super::cache`]) while the key holds.

use std::path::{Path, PathBuf};

use super::cache;
use super::decode::{self, Item, Skipped};
use super::{Dataset, Source, data_err};
use crate::error::Result;
use crate::spec::pipeline::ImageOptions;
use crate::spec::space::Input;

/// The files of an image source, part by part, with labels that index `classes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub train: Vec<Item>,
    pub val: Option<Vec<Item>>,
    pub test: Option<Vec<Item>>,
    pub classes: Vec<String>,
}

/// How a source is read: where its cache lives (none: decode every time) and whether to
/// show progress.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The run folder's `data/` folder: the cache (`data/cache/`) and the list of skipped
    /// files (`data/skipped.json`) go there.
    pub folder: Option<PathBuf>,
    pub progress: bool,
}

impl Listing {
    /// Keeps the first `limit` training images.
    pub fn limit(mut self, limit: Option<u32>) -> Listing {
        if let Some(n) = limit {
            self.train.truncate(n as usize);
        }
        self
    }

    /// The input the listing gives at `opts`' size and channels.
    pub fn input(&self, opts: &ImageOptions) -> Input {
        Input {
            channels: opts.channels.value,
            size: opts.size.value,
            classes: self.classes.len() as u32,
        }
    }

    /// The parts that exist: `("train", items)`, then `val` and `test` when present.
    pub fn parts(&self) -> Vec<(&'static str, &[Item])> {
        let mut out = vec![("train", self.train.as_slice())];
        out.extend(self.val.as_deref().map(|v| ("val", v)));
        out.extend(self.test.as_deref().map(|t| ("test", t)));
        out
    }

    /// A hash of every file's path, label, size and modification time and of the image
    /// options: equal keys read equal images. Stats each file (no reading); a missing file
    /// is an error naming it (and its manifest row) unless `skip_unreadable`.
    pub fn key(&self, opts: &ImageOptions) -> Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(b"nas-pipe image listing 1");
        h.update(options_text(opts).as_bytes());
        for (name, items) in self.parts() {
            h.update(name.as_bytes());
            h.update(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_item(&mut h, item, opts.skip_unreadable)?;
            }
        }
        for c in &self.classes {
            h.update(&(c.len() as u64).to_le_bytes());
            h.update(c.as_bytes());
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

/// The options that change what an image becomes, as text for keys.
fn options_text(opts: &ImageOptions) -> String {
    format!(
        "size {} channels {} resize {:?} skip {} filter {:?}",
        opts.size.value,
        opts.channels.value,
        opts.resize,
        opts.skip_unreadable,
        decode::FILTER
    )
}

fn hash_item(h: &mut blake3::Hasher, item: &Item, skip: bool) -> Result<()> {
    let path = item.path.to_string_lossy();
    h.update(&(path.len() as u64).to_le_bytes());
    h.update(path.as_bytes());
    h.update(&item.label.to_le_bytes());
    match std::fs::metadata(&item.path) {
        Ok(m) => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.update(&m.len().to_le_bytes());
            h.update(&mtime.to_le_bytes());
        }
        Err(_) if skip => {
            h.update(b"missing");
        }
        Err(e) => {
            let at = item
                .row
                .map(|r| format!(", named by manifest row {r}"))
                .unwrap_or_default();
            return Err(data_err(
                &item.path,
                format!(
                    "cannot read the image{at}: {e}\n  = help: fix the path, or set \
                     `skip_unreadable: true` in the data's `image` options to skip it"
                ),
            ));
        }
    }
    Ok(())
}

/// Decodes (or loads from the cache) every part of `listing`. `name` is used in messages.
pub fn read(
    listing: &Listing,
    opts: &ImageOptions,
    name: &str,
    read: &ReadOptions,
) -> Result<Source> {
    let input = listing.input(opts);
    let mut skipped = Vec::new();
    let mut part = |part: &str, items: &[Item]| -> Result<Dataset> {
        let what = format!("{name} {part}");
        let d = load_part(items, opts, &what, input, read)?;
        skipped.extend(d.1);
        Ok(d.0)
    };
    let train = part("train", &listing.train)?;
    let val = listing.val.as_deref().map(|v| part("val", v)).transpose()?;
    let test = listing
        .test
        .as_deref()
        .map(|t| part("test", t))
        .transpose()?;
    if let Some(folder) = &read.folder {
        write_skipped(folder, &skipped)?;
    }
    if train.is_empty() {
        return Err(data_err(
            listing.train.first().map_or(Path::new(name), |i| &i.path),
            "no training image could be read",
        ));
    }
    Ok(Source {
        train,
        val,
        test,
        classes: listing.classes.clone(),
    })
}

/// One part: from the cache when its key holds, else decoded and cached.
fn load_part(
    items: &[Item],
    opts: &ImageOptions,
    what: &str,
    input: Input,
    read: &ReadOptions,
) -> Result<cache::Part> {
    let key = || {
        Listing {
            train: items.to_vec(),
            val: None,
            test: None,
            classes: Vec::new(),
        }
        .key(opts)
    };
    cache::get_or_make(read.folder.as_deref(), what, key, input, || {
        let d = decode::decode_all(items, opts, &format!("decode {what}"), read.progress)?;
        Ok((Dataset::new(what, input, d.images, d.labels)?, d.skipped))
    })
}

/// Writes `data/skipped.json`: the files left out, or an empty list.
pub(super) fn write_skipped(folder: &Path, skipped: &[Skipped]) -> Result<()> {
    std::fs::create_dir_all(folder)
        .map_err(|e| data_err(folder, format!("cannot create the folder: {e}")))?;
    let text = serde_json::to_string_pretty(skipped)
        .map_err(|e| crate::error::Error::Input(e.to_string()))?;
    crate::fsutil::write_atomic(&folder.join(SKIPPED), format!("{text}\n").as_bytes())
}

/// The list of skipped files in the run folder's `data/` folder.
pub const SKIPPED: &str = "skipped.json";

/// A key of whole files (a built-in data set's): their paths, sizes and modification times.
pub fn whole_files_key(files: &[PathBuf]) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(b"nas-pipe data files 1");
    hash_files(&mut h, files)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Hashes each file's path, size and modification time; a missing file is an error.
fn hash_files(h: &mut blake3::Hasher, files: &[PathBuf]) -> Result<()> {
    for f in files {
        let item = Item {
            path: f.clone(),
            label: 0,
            row: None,
        };
        hash_item(h, &item, false)?;
    }
    Ok(())
}

/// A key of whole files (an `Npy` source's arrays) and the image options: their paths,
/// sizes and modification times.
pub fn files_key(files: &[PathBuf], opts: &ImageOptions) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(b"nas-pipe array files 1");
    h.update(options_text(opts).as_bytes());
    hash_files(&mut h, files)?;
    Ok(h.finalize().to_hex().to_string())
}
