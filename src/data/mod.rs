//! Data sets: reading them, splitting them, and turning them into seeded batches.
//!
//! Owns: the IDX reader (MNIST, Fashion-MNIST), the CIFAR-10 binary reader, the synthetic
//! generator, the image sources (image folders [`folder`], CSV manifests [`manifest`], NumPy
//! arrays [`npy`]; one image's preparation in [`decode`]; their listing, key and decoded
//! cache in [`listing`] and [`cache`]), the in-memory [`Dataset`] (u8 images
//! `[N, C, H, W]`, shared and cheap to clone, on the heap or memory-mapped; a subset is a
//! view of the same pixels), splits by portion ([`Split`], index lists into the shared
//! data), per-channel normalisation ([`Normalize`]), augmentation ([`augment`]) and the
//! [`Batcher`] that makes candle tensors. Knows nothing about ops or networks.
//!
//! Every error about a file is an [`Error::Data`] naming the file and saying what is wrong;
//! no input file can make this module panic.
//!
//! Randomness is reproducible and resumable without saved state: each random choice comes
//! from a ChaCha8 generator seeded with a mix of (seed, epoch, stream) ([`rng`]).

pub mod augment;
pub mod batch;
pub mod cache;
pub mod cifar;
pub mod decode;
pub mod folder;
pub mod idx;
pub mod listing;
pub mod manifest;
pub mod normalize;
pub mod npy;
pub mod rng;
pub mod split;
pub mod synthetic;
pub mod table;

use std::path::Path;
use std::sync::Arc;

pub use batch::{Batch, BatchConfig, Batcher, Epoch};
pub use listing::ReadOptions;
pub use normalize::Normalize;
pub use table::Table;

use crate::error::{Error, Result};
use crate::spec::pipeline::{self, Data, ImageOptions};
use crate::spec::space::Input;

/// Images and labels held in memory, shared between clones.
///
/// # Shapes
///
/// `images` is u8 `[N, C, H, W]` (raw pixel values 0..=255, row-major planes), `labels` is
/// `[N]` with every label below `input.classes`. `H = W = input.size`.
///
/// A [`Dataset::subset`] is a view: it shares its parent's pixels and keeps which of them
/// are its images (`rows`), so carving parts from a training set copies no image.
#[derive(Debug, Clone)]
pub struct Dataset {
    name: String,
    input: Input,
    images: Pixels,
    /// Image `i` is image `rows[i]` of `images`; `None`: image `i` is image `i`.
    rows: Option<Arc<[usize]>>,
    labels: Arc<[u32]>,
}

/// Where a data set's pixels live: the first `len` bytes of a buffer on the heap or of a
/// memory-mapped cache file. A prefix ([`Dataset::first`]) shares the buffer.
#[derive(Clone)]
pub(crate) enum Pixels {
    Heap(Arc<[u8]>, usize),
    Mapped(Arc<memmap2::Mmap>, usize),
}

impl Pixels {
    /// A whole heap buffer.
    fn heap(bytes: Vec<u8>) -> Pixels {
        let len = bytes.len();
        Pixels::Heap(bytes.into(), len)
    }

    /// The first `len` bytes of a mapped file (clamped to its length).
    pub(crate) fn mapped(map: Arc<memmap2::Mmap>, len: usize) -> Pixels {
        let len = len.min(map.len());
        Pixels::Mapped(map, len)
    }

    /// The first `len` bytes, without copying.
    fn prefix(&self, len: usize) -> Pixels {
        match self {
            Pixels::Heap(a, l) => Pixels::Heap(a.clone(), len.min(*l)),
            Pixels::Mapped(m, l) => Pixels::Mapped(m.clone(), len.min(*l)),
        }
    }
}

impl std::ops::Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pixels::Heap(a, len) => &a[..*len],
            Pixels::Mapped(m, len) => &m[..*len],
        }
    }
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Pixels::Heap(..) => "heap",
            Pixels::Mapped(..) => "mapped",
        };
        write!(f, "Pixels({kind}, {} bytes)", self.len())
    }
}

impl Dataset {
    /// A data set from its parts. `name` is used in messages ("fashion-mnist train").
    /// Errors if `images` does not hold exactly `labels.len()` images of the input's shape,
    /// or a label is not below `input.classes`.
    pub fn new(
        name: impl Into<String>,
        input: Input,
        images: Vec<u8>,
        labels: Vec<u32>,
    ) -> Result<Dataset> {
        Dataset::from_pixels(name.into(), input, Pixels::heap(images), labels)
    }

    /// [`Dataset::new`] over pixels held either way.
    pub(crate) fn from_pixels(
        name: String,
        input: Input,
        images: Pixels,
        labels: Vec<u32>,
    ) -> Result<Dataset> {
        let per = image_len(input);
        if per == 0 || input.classes == 0 {
            return Err(Error::Input(format!(
                "data set {name}: the shape {} has no pixels or no classes",
                shape_text(input)
            )));
        }
        if Some(images.len()) != labels.len().checked_mul(per) {
            return Err(Error::Input(format!(
                "data set {name}: {} pixel bytes do not make {} images of {} ({per} bytes each)",
                images.len(),
                labels.len(),
                shape_text(input)
            )));
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l >= input.classes)
        {
            return Err(Error::Input(format!(
                "data set {name}: image {i} has label {l}, but there are {} classes",
                input.classes
            )));
        }
        Ok(Dataset {
            name,
            input,
            images,
            rows: None,
            labels: labels.into(),
        })
    }

    /// The name given in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Channels, image side and number of classes.
    pub fn input(&self) -> Input {
        self.input
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: `C * H * W`.
    pub fn image_len(&self) -> usize {
        image_len(self.input)
    }

    /// Image `i`, u8 `[C, H, W]`. Panics if `i >= len()` (indices come from this module's
    /// checked index lists).
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.image_len();
        let at = self.rows.as_ref().map_or(i, |r| r[i]);
        &self.images[at * per..(at + 1) * per]
    }

    /// The label of image `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// All images, u8 `[N, C, H, W]`: borrowed, or gathered into one buffer for a
    /// [`Dataset::subset`] view.
    pub fn images(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.rows {
            None => std::borrow::Cow::Borrowed(&self.images),
            Some(rows) => {
                let mut out = Vec::with_capacity(rows.len() * self.image_len());
                for i in 0..rows.len() {
                    out.extend_from_slice(self.image(i));
                }
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// Whether `self` and `other` read their images from the same pixel buffer (a data set
    /// and the subsets carved from it do).
    pub fn shares_pixels_with(&self, other: &Dataset) -> bool {
        std::ptr::eq(self.images.as_ptr(), other.images.as_ptr())
    }

    /// All labels, `[N]`.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Every index, in order: `0..len()`.
    pub fn all(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }

    /// The first `n` images (all of them if there are fewer), sharing the pixels.
    pub fn first(&self, n: usize) -> Dataset {
        if n >= self.len() {
            return self.clone();
        }
        let (images, rows) = match &self.rows {
            None => (self.images.prefix(n * self.image_len()), None),
            Some(r) => (self.images.clone(), Some(r[..n].into())),
        };
        Dataset {
            name: self.name.clone(),
            input: self.input,
            images,
            rows,
            labels: self.labels[..n].into(),
        }
    }

    /// The images at `indices` (in that order) under a new name: a view sharing this data
    /// set's pixels (no image is copied; the labels and an index per image are). Panics if
    /// an index is out of range (indices come from this module's checked index lists).
    pub fn subset(&self, indices: &[usize], name: impl Into<String>) -> Dataset {
        let rows = match &self.rows {
            None => indices.into(),
            Some(r) => indices.iter().map(|&i| r[i]).collect(),
        };
        Dataset {
            name: name.into(),
            input: self.input,
            images: self.images.clone(),
            rows: Some(rows),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Splits the indices `0..len()` by order, as DARTS does: the first
    /// `floor(portion * len)` train the weights, the rest are held out. Errors if either
    /// part would be empty.
    pub fn split(&self, portion: f64) -> Result<Split> {
        let n = self.len();
        if !(portion.is_finite() && portion > 0.0 && portion < 1.0) {
            return Err(Error::Input(format!(
                "the split portion must be in (0, 1), got {portion}"
            )));
        }
        let cut = ((portion * n as f64).floor() as usize).min(n);
        if cut == 0 || cut == n {
            return Err(Error::Input(format!(
                "a portion of {portion} of the {n} images of {} leaves {} part empty",
                self.name,
                if cut == 0 { "the first" } else { "the second" }
            )));
        }
        Ok(Split {
            first: (0..cut).collect(),
            rest: (cut..n).collect(),
        })
    }

    /// Checks that this data set gives what a network expects (channels, image size,
    /// classes); the error says both.
    pub fn check_input(&self, expected: Input) -> Result<()> {
        if self.input == expected {
            return Ok(());
        }
        Err(Error::Input(format!(
            "the data set {} gives {} images in {} classes, but the network expects {} images \
             in {} classes",
            self.name,
            shape_text(self.input),
            self.input.classes,
            shape_text(expected),
            expected.classes
        )))
    }
}

/// A training set split in two index lists into the same [`Dataset`] (no images copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The first indices (DARTS: trains the weights).
    pub first: Vec<usize>,
    /// The remaining indices (DARTS: trains the architecture).
    pub rest: Vec<usize>,
}

/// What a data source gives before any split is carved from it: the training part always,
/// a validation and a test part when the source has them (an image folder's `val/` and
/// `test/` trees, a benchmark's test files), and the class names in label order.
#[derive(Debug, Clone)]
pub struct Source {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    pub classes: Vec<String>,
}

/// Reads or generates the data set a pipeline declares, as its source gives it.
///
/// `dir` is the data directory already resolved by the caller (relative to the pipeline
/// file) for the built-in sets, and the folder the image sources' paths are relative to
/// (the pipeline's folder); it is ignored for `Synthetic`. `seed` only matters for
/// `Synthetic`. `limit` keeps the first that many training images (all of them if there
/// are fewer); the other parts are always whole. Image sources are decoded every time:
/// [`read_with`] caches them.
pub fn read(data: &Data, dir: Option<&Path>, seed: u64) -> Result<Source> {
    read_with(data, dir, seed, &ReadOptions::default())
}

/// [`read`], with the image sources' cache and skipped-file list in `opts.folder` and
/// progress shown when `opts.progress`.
pub fn read_with(data: &Data, dir: Option<&Path>, seed: u64, opts: &ReadOptions) -> Result<Source> {
    let need_dir = |what: &str| {
        dir.ok_or_else(|| Error::Input(format!("the {what} data set needs a directory")))
    };
    let (train, test, limit) = match data {
        Data::FashionMnist { limit, .. } => {
            let (a, b) = idx::load(need_dir("fashion-mnist")?, "fashion-mnist")?;
            (a, b, limit.as_ref().map(|l| l.value))
        }
        Data::Mnist { limit, .. } => {
            let (a, b) = idx::load(need_dir("mnist")?, "mnist")?;
            (a, b, limit.as_ref().map(|l| l.value))
        }
        Data::Cifar10 { limit, .. } => {
            let (a, b) = cifar::load(need_dir("cifar-10")?)?;
            (a, b, limit.as_ref().map(|l| l.value))
        }
        &Data::Synthetic {
            channels,
            size,
            classes,
            train,
            test,
        } => {
            let input = Input {
                channels,
                size,
                classes,
            };
            let (a, b) = synthetic::generate(input, train as usize, test as usize, seed)?;
            (a, b, None)
        }
        Data::ImageFolder { image, .. } | Data::Csv { image, .. } => {
            let listing =
                list_images(data, need_dir("image")?)?.limit(image.limit.as_ref().map(|l| l.value));
            return listing::read(&listing, image, source_name(data), opts);
        }
        Data::Npy { image, .. } => return read_npy(data, need_dir("npy")?, image, opts),
    };
    let train = match limit {
        Some(n) => train.first(n as usize),
        None => train,
    };
    Ok(Source {
        train,
        val: None,
        test: Some(test),
        classes: class_names(data).unwrap_or_default(),
    })
}

/// An `Npy` source's arrays as a [`Source`].
/// An `Npy` source's parts, each from the cache in `opts.folder` when its key holds (the
/// arrays' files, the image options, the layout and the classes); the elements
/// `skip_unreadable` left out are listed there.
fn read_npy(data: &Data, base: &Path, image: &ImageOptions, opts: &ReadOptions) -> Result<Source> {
    let Some(paths) = npy_paths(data, base) else {
        return Err(Error::Input("not an Npy data set".into()));
    };
    let classes = npy::classes(&paths)?;
    let input = Input {
        channels: image.channels.value,
        size: image.size.value,
        classes: classes.len() as u32,
    };
    let key = || -> Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(listing::files_key(&paths.files(), image)?.as_bytes());
        h.update(format!("{:?} {:?}", paths.layout, classes).as_bytes());
        Ok(h.finalize().to_hex().to_string())
    };
    let folder = opts.folder.as_deref();
    let part = |part: npy::Part, what: &str| {
        cache::get_or_make(folder, what, key, input, || {
            npy::read_part(&paths, part, image, &classes)
        })
    };
    let (train, mut skipped) = part(npy::Part::Train, "npy train")?;
    let test = match paths.test {
        Some(_) => {
            let (t, s) = part(npy::Part::Test, "npy test")?;
            skipped.extend(s);
            Some(t)
        }
        None => None,
    };
    if let Some(folder) = folder {
        listing::write_skipped(folder, &skipped)?;
    }
    if train.is_empty() {
        return Err(data_err(
            &npy::file_of(base, paths.images),
            "no training image could be used: every element was left out (data/skipped.json)",
        ));
    }
    Ok(Source {
        train: match &image.limit {
            Some(n) => train.first(n.value as usize),
            None => train,
        },
        val: None,
        test,
        classes,
    })
}

/// The arrays an `Npy` source names.
fn npy_paths<'a>(data: &'a Data, base: &'a Path) -> Option<npy::Paths<'a>> {
    let Data::Npy {
        images,
        labels,
        layout,
        test_images,
        test_labels,
        ..
    } = data
    else {
        return None;
    };
    Some(npy::Paths {
        base,
        images,
        labels,
        test: test_images.as_deref().zip(test_labels.as_deref()),
        layout: *layout,
        classes: data.class_names().map(|c| c.value.as_slice()),
    })
}

/// Lists an image folder or CSV manifest (relative paths against `base`), checked against
/// and labelled by the declared class names when the spec gives them.
pub fn list_images(data: &Data, base: &Path) -> Result<listing::Listing> {
    let declared = data.class_names().map(|c| c.value.as_slice());
    match data {
        Data::ImageFolder { dir, .. } => folder::list(&base.join(dir), declared),
        Data::Csv {
            file,
            root,
            val,
            test,
            ..
        } => {
            let file = base.join(file);
            let root = match root {
                Some(r) => base.join(r),
                None => file.parent().unwrap_or(Path::new("")).to_path_buf(),
            };
            let val = val.as_ref().map(|v| base.join(v));
            let test = test.as_ref().map(|t| base.join(t));
            let manifests = manifest::Manifests {
                file: &file,
                root: &root,
                val: val.as_deref(),
                test: test.as_deref(),
            };
            manifest::list(manifests, declared)
        }
        _ => Err(Error::Input("not an image folder or CSV data set".into())),
    }
}

/// The key of a built-in data set's files (their paths, sizes and modification times), so
/// that a replaced file makes the stages that read it stale; empty for synthetic data and
/// while the files are missing (the stages that read them say so).
fn builtin_key(data: &Data, dir: Option<&Path>) -> Result<String> {
    let files = match (data, dir) {
        (Data::FashionMnist { .. }, Some(d)) => idx::files(d, "fashion-mnist"),
        (Data::Mnist { .. }, Some(d)) => idx::files(d, "mnist"),
        (Data::Cifar10 { .. }, Some(d)) => cifar::files(d),
        _ => return Ok(String::new()),
    };
    match files {
        Ok(files) => listing::whole_files_key(&files),
        Err(_) => Ok(String::new()),
    }
}

/// `image-folder`, `csv`, `npy`, ...: a source's name in messages.
fn source_name(data: &Data) -> &'static str {
    match data {
        Data::FashionMnist { .. } => "fashion-mnist",
        Data::Mnist { .. } => "mnist",
        Data::Cifar10 { .. } => "cifar-10",
        Data::Synthetic { .. } => "synthetic",
        Data::ImageFolder { .. } => "image-folder",
        Data::Csv { .. } => "csv",
        Data::Npy { .. } => "npy",
    }
}

/// What a data set gives, found without decoding any image: the input shape, the class
/// names, and a key of its files (empty for the built-in sets, whose files the data
/// section names) that changes when a file is replaced, added or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub input: Input,
    pub classes: Vec<String>,
    pub key: String,
}

/// What the spec alone says a data set gives: the input and class names of a built-in or
/// synthetic set, or of an image source that declares its class names, with an empty key;
/// `None` for an image source whose classes come from its files. Touches no file.
pub fn declared(data: &Data) -> Option<Described> {
    Some(Described {
        input: data.input()?,
        classes: class_names(data)?,
        key: String::new(),
    })
}

/// Describes a data set: lists an image folder or manifest (stat only, checked against the
/// declared class names), reads an `Npy` source's labels (unless it declares its class
/// names). `dir` as for [`read`].
pub fn describe(data: &Data, dir: Option<&Path>) -> Result<Described> {
    if data.image_options().is_none()
        && let Some(d) = declared(data)
    {
        return Ok(Described {
            key: builtin_key(data, dir)?,
            ..d
        });
    }
    let (Some(base), Some(image)) = (dir, data.image_options()) else {
        return Err(Error::Input("an image data set needs a directory".into()));
    };
    let (classes, key) = match data {
        Data::Npy { .. } => {
            let paths = npy_paths(data, base).expect("an Npy data set");
            let classes = npy::classes(&paths)?;
            (classes, listing::files_key(&paths.files(), image)?)
        }
        _ => {
            let l = list_images(data, base)?.limit(image.limit.as_ref().map(|l| l.value));
            let key = l.key(image)?;
            (l.classes, key)
        }
    };
    if classes.len() < 2 {
        return Err(Error::Input(format!(
            "the {} data set has {} class{} ({}); a classifier needs at least 2",
            source_name(data),
            classes.len(),
            if classes.len() == 1 { "" } else { "es" },
            classes.join(", ")
        )));
    }
    let (channels, size) = data.shape();
    Ok(Described {
        input: Input {
            channels,
            size,
            classes: classes.len() as u32,
        },
        classes,
        key,
    })
}

/// A data set's three parts, each a [`Dataset`] of its own.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Trains the network; the search splits only this part.
    pub train: Dataset,
    /// Selects among trained weights (retraining's `best`); never trained on.
    pub val: Dataset,
    /// Evaluated once a network is final; never trained on nor selected on.
    pub test: Dataset,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Which parts were carved from the source's training part (`"validation"`, `"test"`).
    pub carved: Vec<&'static str>,
}

/// Reads the data set a pipeline declares ([`read`]) and carves the parts its source lacks
/// from the training part with [`split::stratified`]: the `split` fractions of each class,
/// seeded by `seed`. `limit` applies before the split. Parts the source has are used as
/// given.
pub fn splits(
    data: &Data,
    dir: Option<&Path>,
    seed: u64,
    fractions: &pipeline::Split,
) -> Result<Splits> {
    split_source(read(data, dir, seed)?, seed, fractions)
}

/// [`splits`] of a source already read.
pub fn split_source(source: Source, seed: u64, fractions: &pipeline::Split) -> Result<Splits> {
    let mut parts = Vec::new();
    if source.val.is_none() {
        parts.push(split::Part {
            name: "validation",
            fraction: fractions.validation.value,
        });
    }
    if source.test.is_none() {
        parts.push(split::Part {
            name: "test",
            fraction: fractions.test.value,
        });
    }
    let carved = split::stratified(&source.train, &parts, seed, &source.classes)?;
    let mut pieces = carved.parts.into_iter();
    let name = source.train.name().to_string();
    let base = name.strip_suffix(" train").unwrap_or(&name).to_string();
    let mut take = |given: Option<Dataset>, part: &str| match given {
        Some(d) => d,
        // One list per part asked for, in the order asked.
        None => source
            .train
            .subset(&pieces.next().unwrap_or_default(), format!("{base} {part}")),
    };
    let val = take(source.val, "validation");
    let test = take(source.test, "test");
    Ok(Splits {
        train: source.train.subset(&carved.train, name),
        val,
        test,
        classes: source.classes,
        carved: parts.iter().map(|p| p.name).collect(),
    })
}

/// Whether the pipeline keeps only the first images of the training part.
pub fn has_limit(data: &Data) -> bool {
    matches!(
        data,
        Data::FashionMnist { limit: Some(_), .. }
            | Data::Mnist { limit: Some(_), .. }
            | Data::Cifar10 { limit: Some(_), .. }
    ) || data
        .image_options()
        .is_some_and(|o| o.value.limit.is_some())
}

/// What [`probe`] found in a data set's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The folder the files are in.
    pub dir: std::path::PathBuf,
    /// The number of training images (before any `limit`).
    pub train: usize,
    /// The number of test images.
    pub test: usize,
}

/// Checks, without reading the images, that the files [`load`] reads exist and that their
/// headers (IDX) or sizes (CIFAR-10) fit the data set; `None` for synthetic data, which has
/// no files. The error names the file at fault and says where the data set comes from.
pub fn probe(data: &Data, dir: Option<&Path>) -> Result<Option<Found>> {
    let Some(dir) = dir.filter(|_| !matches!(data, Data::Synthetic { .. })) else {
        return Ok(None);
    };
    let found = match data {
        Data::FashionMnist { .. } => idx::probe(dir, "fashion-mnist"),
        Data::Mnist { .. } => idx::probe(dir, "mnist"),
        Data::Cifar10 { .. } => cifar::probe(dir),
        Data::Synthetic { .. } | Data::Npy { .. } => return Ok(None),
        Data::ImageFolder { dir: d, image } | Data::Csv { file: d, image, .. } => {
            let l = list_images(data, dir)?.limit(image.limit.as_ref().map(|l| l.value));
            l.key(image)?;
            return Ok(Some(Found {
                dir: dir.join(d),
                train: l.train.len(),
                test: l.test.as_ref().map_or(0, Vec::len),
            }));
        }
    };
    match found {
        Ok((train, test)) => Ok(Some(Found {
            dir: match data {
                Data::Cifar10 { .. } => cifar::batches_dir(dir),
                _ => dir.to_path_buf(),
            },
            train,
            test,
        })),
        Err(Error::Data { path, message }) => Err(Error::Data {
            path,
            message: format!("{message}\n  = help: {}", where_to_get(data)),
        }),
        Err(e) => Err(e),
    }
}

/// Where a file-based data set can be had, for messages.
fn where_to_get(data: &Data) -> &'static str {
    match data {
        Data::FashionMnist { .. } => {
            "Debian's package dataset-fashion-mnist installs the four files in \
             /usr/share/datasets/fashion-mnist (`sudo apt-get install dataset-fashion-mnist`; \
             scripts/run.sh does it); they can also be downloaded from \
             https://github.com/zalandoresearch/fashion-mnist#get-the-data"
        }
        Data::Mnist { .. } => {
            "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
             t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from \
             https://yann.lecun.com/exdb/mnist/ (or a mirror) into this folder"
        }
        Data::Cifar10 { .. } => {
            "download the CIFAR-10 binary version (cifar-10-binary.tar.gz) from \
             https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into the folder the \
             pipeline's `data: Cifar10(dir: ...)` names"
        }
        Data::Synthetic { .. } => "synthetic data has no files",
        Data::ImageFolder { .. } | Data::Csv { .. } | Data::Npy { .. } => {
            "docs/pipelines.md (\"Your own images\") says how to lay out the files"
        }
    }
}

/// The class names of a data set, in label order (`"0"`, `"1"`, ... for synthetic data);
/// for an image source its declared class names, else `None`: its classes come from its
/// files ([`describe`]).
pub fn class_names(data: &Data) -> Option<Vec<String>> {
    let names: &[&str] = match data {
        Data::FashionMnist { .. } => &[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        Data::Mnist { .. } => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        Data::Cifar10 { .. } => &[
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        Data::Synthetic { classes, .. } => {
            return Some((0..*classes).map(|c| c.to_string()).collect());
        }
        Data::ImageFolder { .. } | Data::Csv { .. } | Data::Npy { .. } => {
            return data.class_names().map(|c| c.value.clone());
        }
    };
    Some(names.iter().map(|s| s.to_string()).collect())
}

/// `C * H * W`, saturating (a shape that large is refused before anything is allocated).
fn image_len(input: Input) -> usize {
    (input.channels as usize)
        .saturating_mul(input.size as usize)
        .saturating_mul(input.size as usize)
}

/// `3×32×32`.
fn shape_text(input: Input) -> String {
    format!("{}×{}×{}", input.channels, input.size, input.size)
}

/// An [`Error::Data`] about `path`.
fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Refuses `path` unless it is a regular file, before it is opened (opening a FIFO blocks
/// for ever): `PATH: cannot open the ROLE: WHY`, `role` naming the file ("manifest").
fn regular_file(path: &Path, role: &str) -> Result<()> {
    match crate::fsutil::regular_file(path, &format!("the {role}")) {
        Ok(_) => Ok(()),
        Err(Error::Io { source, .. }) => {
            Err(data_err(path, format!("cannot open the {role}: {source}")))
        }
        Err(other) => Err(other),
    }
}

/// `1 byte`, `2 bytes`.
fn plural(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::TempDir;
    use crate::spec::Spanned;

    fn input(channels: u32, size: u32, classes: u32) -> Input {
        Input {
            channels,
            size,
            classes,
        }
    }

    #[test]
    fn new_checks_sizes_and_labels() {
        let ok = Dataset::new("t", input(1, 2, 3), vec![0; 8], vec![0, 2]).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok.image(1), &[0; 4]);
        let short = Dataset::new("t", input(1, 2, 3), vec![0; 7], vec![0, 2]).unwrap_err();
        assert!(
            short.to_string().contains("do not make 2 images"),
            "{short}"
        );
        let label = Dataset::new("t", input(1, 2, 3), vec![0; 8], vec![0, 3]).unwrap_err();
        assert!(label.to_string().contains("image 1 has label 3"), "{label}");
    }

    #[test]
    fn split_sizes_follow_index_order() {
        let d = Dataset::new("t", input(1, 1, 2), vec![0; 10], vec![0; 10]).unwrap();
        let s = d.split(0.5).unwrap();
        assert_eq!(s.first, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.rest, vec![5, 6, 7, 8, 9]);
        let s = d.split(0.75).unwrap();
        assert_eq!((s.first.len(), s.rest.len()), (7, 3));
        assert_eq!(s.rest[0], 7);
        assert!(d.split(0.05).is_err());
        assert!(d.split(1.0).is_err());
        assert!(d.split(f64::NAN).is_err());
    }

    #[test]
    fn first_keeps_a_prefix() {
        let d = Dataset::new("t", input(1, 1, 4), vec![5, 6, 7], vec![1, 2, 3]).unwrap();
        let f = d.first(2);
        assert_eq!(&f.images()[..], &[5, 6]);
        assert_eq!(f.labels(), &[1, 2]);
        assert_eq!(d.first(10).len(), 3);
    }

    #[test]
    fn check_input_says_both_shapes() {
        let d = Dataset::new("fm", input(1, 28, 10), vec![0; 784], vec![0]).unwrap();
        d.check_input(input(1, 28, 10)).unwrap();
        let e = d.check_input(input(3, 32, 10)).unwrap_err().to_string();
        assert!(e.contains("1×28×28") && e.contains("3×32×32"), "{e}");
    }

    #[test]
    fn splits_carve_validation_and_keep_the_test_set() {
        let data = Data::Synthetic {
            channels: 3,
            size: 8,
            classes: 4,
            train: 64,
            test: 32,
        };
        let fractions = pipeline::Split::default();
        let s = splits(&data, None, 7, &fractions).unwrap();
        assert_eq!(s.carved, ["validation"]);
        assert_eq!(s.test.len(), 32);
        assert_eq!(s.train.len() + s.val.len(), 64);
        assert!((4..=10).contains(&s.val.len()), "{}", s.val.len());
        assert_eq!(s.train.input(), input(3, 8, 4));
        assert_eq!(s.val.name(), "synthetic validation");
        let again = splits(&data, None, 7, &fractions).unwrap();
        assert_eq!(again.val.images(), s.val.images());
        assert_eq!(again.train.labels(), s.train.labels());
    }

    /// `limit` keeps the first images of the training part; the split carves from those.
    #[test]
    fn limit_applies_before_the_split() {
        let dir = TempDir::new("load-limit");
        let mut images = Vec::new();
        for i in 0..8u8 {
            images.extend(std::iter::repeat_n(i, 784));
        }
        let labels = [0, 1, 0, 1, 0, 1, 9, 9];
        idx::tests::write_pair(&dir.0, "train", &images, &labels, false);
        idx::tests::write_pair(&dir.0, "t10k", &images[..784], &[9], true);
        let data = Data::Mnist {
            dir: "unused".into(),
            limit: Some(Spanned::unspanned(6)),
        };
        let s = splits(&data, Some(&dir.0), 0, &pipeline::Split::default()).unwrap();
        assert_eq!(s.train.len() + s.val.len(), 6);
        let mut val = s.val.labels().to_vec();
        val.sort_unstable();
        assert_eq!(val, [0, 1], "one image of each class present");
        assert!(
            s.train
                .images()
                .iter()
                .chain(s.val.images().iter())
                .all(|&p| p < 6)
        );
        assert_eq!(s.test.labels(), &[9]);
        let e = splits(&data, None, 0, &pipeline::Split::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a directory"), "{e}");
    }

    /// Issue #18: `limit` on data held on the heap keeps a view of the loaded images: the
    /// kept images are the first bytes of the one buffer the whole training part was read
    /// into, not a copy of them.
    #[test]
    fn limit_keeps_a_view_instead_of_copying_the_images() {
        let (whole, _) = synthetic::generate(input(1, 4, 3), 10, 1, 5).unwrap();
        let kept = whole.first(6);
        let Pixels::Heap(buffer, _) = &whole.images else {
            panic!("synthetic data is on the heap");
        };
        assert_eq!(Arc::strong_count(buffer), 2, "the prefix holds a copy");
        assert!(kept.shares_pixels_with(&whole));
        assert_eq!(&kept.images()[..], &whole.images()[..6 * 16]);
        assert_eq!(kept.labels(), &whole.labels()[..6]);
        // Through a loader: the limited training part is a prefix of the whole file's
        // images (8 of them), so its buffer is longer than what it shows.
        let dir = TempDir::new("limit-view");
        let images: Vec<u8> = (0..8 * 784).map(|i| (i / 784) as u8).collect();
        idx::tests::write_pair(&dir.0, "train", &images, &[0, 1, 0, 1, 0, 1, 0, 1], false);
        idx::tests::write_pair(&dir.0, "t10k", &images[..784], &[1], true);
        let data = Data::Mnist {
            dir: "unused".into(),
            limit: Some(Spanned::unspanned(5)),
        };
        let train = read(&data, Some(&dir.0), 0).unwrap().train;
        let Pixels::Heap(buffer, len) = &train.images else {
            panic!("IDX data is on the heap");
        };
        assert_eq!((buffer.len(), *len), (8 * 784, 5 * 784));
        assert_eq!(&train.images()[..], &images[..5 * 784]);
    }

    /// The part sizes docs/pipelines.md gives for `pipelines/fashion-mnist-quick.ron`.
    #[test]
    fn fashion_mnist_limit_40000_splits_as_documented() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.exists() {
            println!("skipped: no Fashion-MNIST in {}", dir.display());
            return;
        }
        let data = Data::FashionMnist {
            dir: "unused".into(),
            limit: Some(Spanned::unspanned(40_000)),
        };
        let s = splits(&data, Some(dir), 2, &pipeline::Split::default()).unwrap();
        assert_eq!(
            (s.train.len(), s.val.len(), s.test.len()),
            (35_999, 4_001, 10_000)
        );
        let mut per_class = [0usize; 10];
        for &l in s.val.labels() {
            per_class[l as usize] += 1;
        }
        let (lo, hi) = (per_class.iter().min(), per_class.iter().max());
        assert_eq!((lo, hi), (Some(&394), Some(&407)), "{per_class:?}");
    }

    #[test]
    fn subset_keeps_the_order_given() {
        let d = Dataset::new("t", input(1, 1, 4), vec![5, 6, 7], vec![1, 2, 3]).unwrap();
        let s = d.subset(&[2, 0], "u");
        assert_eq!(
            (&s.images()[..], s.labels(), s.name()),
            (&[7, 5][..], &[3, 1][..], "u")
        );
        // A subset of a subset, and its first images, index the same pixels.
        let t = s.subset(&[1], "v");
        assert_eq!((&t.images()[..], t.labels()), (&[5][..], &[1][..]));
        assert_eq!(s.first(1).image(0), &[7]);
        assert!(t.shares_pixels_with(&d) && s.first(1).shares_pixels_with(&d));
    }

    /// Issue #18: carving validation (and test) from the training part shares the decoded
    /// images: every part reads the source's one pixel buffer, whose only other owners are
    /// the parts, and the parts are exactly the images the split picked.
    #[test]
    fn splits_share_the_training_images_instead_of_copying_them() {
        let (whole, _) = synthetic::generate(input(1, 4, 3), 60, 1, 5).unwrap();
        let source = Source {
            train: whole.clone(),
            val: None,
            test: None,
            classes: vec!["a".into(), "b".into(), "c".into()],
        };
        let fractions = pipeline::Split::default();
        let s = split_source(source, 5, &fractions).unwrap();
        assert_eq!(s.carved, ["validation", "test"]);
        let Pixels::Heap(buffer, _) = &whole.images else {
            panic!("synthetic data is on the heap");
        };
        // `whole` and the three parts own the one buffer; no part holds a copy.
        assert_eq!(Arc::strong_count(buffer), 4);
        // Each part holds the images the stratified split picks, in its order.
        let parts = [
            split::Part {
                name: "validation",
                fraction: fractions.validation.value,
            },
            split::Part {
                name: "test",
                fraction: fractions.test.value,
            },
        ];
        let picked = split::stratified(&whole, &parts, 5, &s.classes).unwrap();
        let lists = [&picked.train, &picked.parts[0], &picked.parts[1]];
        for (part, list) in [&s.train, &s.val, &s.test].into_iter().zip(lists) {
            assert!(part.shares_pixels_with(&whole), "{}", part.name());
            assert_eq!(part.len(), list.len());
            for (i, &j) in list.iter().enumerate() {
                assert_eq!(part.image(i), whole.image(j));
                assert_eq!(part.label(i), whole.label(j));
            }
        }
    }
}
