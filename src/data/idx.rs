//! The IDX reader: MNIST and Fashion-MNIST (1×28×28 images, 10 classes).
//!
//! A directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each raw or gzipped (`.gz`; the
//! raw file is preferred when both exist; the `train-images.idx3-ubyte` spelling of some
//! mirrors is accepted too). Debian's `dataset-fashion-mnist` installs the gzipped files in
//! `/usr/share/datasets/fashion-mnist`. Gzip is recognised by the file's first bytes, not
//! its name.
//!
//! Format: a big-endian u32 magic number (2051 for images: unsigned bytes, 3 dimensions;
//! 2049 for labels: unsigned bytes, 1 dimension), one big-endian u32 per dimension, then the
//! bytes, row-major. Checked: the magic, the dimensions (28×28), that the data is exactly as
//! long as the header says, that images and labels agree in number, and that labels are
//! below 10. Memory use is bounded by the actual data, whatever a header claims.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::{Dataset, data_err, plural};
use crate::error::Result;
use crate::spec::space::Input;

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGE_MAGIC: u32 = 0x0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABEL_MAGIC: u32 = 0x0801;

/// The shape of MNIST and Fashion-MNIST.
pub const INPUT: Input = Input {
    channels: 1,
    size: 28,
    classes: 10,
};

/// The images of one IDX image file.
///
/// # Shapes
///
/// `pixels` is u8 `[count, rows, cols]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads the training and test sets from `dir`; `name` ("fashion-mnist") names the sets in
/// messages. Errors name the file at fault; missing files are all named at once.
pub fn load(dir: &Path, name: &str) -> Result<(Dataset, Dataset)> {
    let paths = find_all(dir, name)?;
    let train = load_pair(&paths[0], &paths[1], &format!("{name} train"))?;
    let test = load_pair(&paths[2], &paths[3], &format!("{name} test"))?;
    Ok((train, test))
}

/// Checks what [`load`] would read without reading it: the four files exist, their headers
/// declare 28×28 images and as many labels as images. Reads only the headers. Returns the
/// number of training and test images.
pub fn probe(dir: &Path, name: &str) -> Result<(usize, usize)> {
    let paths = find_all(dir, name)?;
    let train = probe_pair(&paths[0], &paths[1])?;
    let test = probe_pair(&paths[2], &paths[3])?;
    Ok((train, test))
}

/// The four files [`load`] reads: training images and labels, test images and labels.
pub fn files(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    find_all(dir, name)
}

/// The paths of the training images and labels and test images and labels in `dir`, in
/// that order; the error names every missing file at once.
fn find_all(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let mut missing = Vec::new();
    for n in [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS] {
        match find(dir, n) {
            Some(p) => paths.push(p),
            None => missing.push(n),
        }
    }
    if missing.is_empty() {
        return Ok(paths);
    }
    let what = if dir.is_dir() {
        format!("missing {} (each may also end in .gz)", missing.join(", "))
    } else {
        format!("no such directory (expected the {name} IDX files in it)")
    };
    Err(data_err(dir, what))
}

/// The headers of an image file and its label file, checked against [`INPUT`] and each
/// other; returns the number of images.
fn probe_pair(images_path: &Path, labels_path: &Path) -> Result<usize> {
    let (mut r, gz) = open(images_path)?;
    let dims = read_header(&mut r, images_path, gz, IMAGE_MAGIC, "image", 3)?;
    check_size(images_path, dims[1], dims[2])?;
    let (mut r, gz) = open(labels_path)?;
    let labels = read_header(&mut r, labels_path, gz, LABEL_MAGIC, "label", 1)?[0];
    check_count(images_path, dims[0], labels_path, labels)?;
    Ok(dims[0])
}

/// Errors naming `path` unless its images are [`INPUT`]'s size.
fn check_size(path: &Path, rows: usize, cols: usize) -> Result<()> {
    let size = INPUT.size as usize;
    if rows == size && cols == size {
        return Ok(());
    }
    Err(data_err(
        path,
        format!("images are {rows}×{cols}, expected {size}×{size}"),
    ))
}

/// Errors naming the label file unless it has as many labels as the image file images.
fn check_count(images_path: &Path, images: usize, labels_path: &Path, labels: usize) -> Result<()> {
    if images == labels {
        return Ok(());
    }
    Err(data_err(
        labels_path,
        format!(
            "has {} but {} has {}",
            plural(labels as u64, "label"),
            images_path.display(),
            plural(images as u64, "image")
        ),
    ))
}

/// The file for `name` in `dir`: `name`, `name.gz`, or the same with `-idx` spelled
/// `.idx`, the first that exists.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    [
        name.to_string(),
        format!("{name}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

/// Reads an image file and a label file that belong together and checks them against each
/// other and against [`INPUT`].
fn load_pair(images_path: &Path, labels_path: &Path, name: &str) -> Result<Dataset> {
    let images = read_images(images_path)?;
    check_size(images_path, images.rows, images.cols)?;
    let labels = read_labels(labels_path)?;
    check_count(images_path, images.count, labels_path, labels.len())?;
    check_labels(labels_path, &labels, INPUT.classes)?;
    Dataset::new(
        name,
        INPUT,
        images.pixels,
        labels.into_iter().map(u32::from).collect(),
    )
}

/// Errors naming `path` if a label is not below `classes`.
pub(super) fn check_labels(path: &Path, labels: &[u8], classes: u32) -> Result<()> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, l)| u32::from(**l) >= classes)
    {
        Some((i, l)) => Err(data_err(
            path,
            format!(
                "label {l} of item {i} is out of range: there are {classes} classes (0 to {})",
                classes - 1
            ),
        )),
        None => Ok(()),
    }
}

/// Reads an IDX image file (magic 2051).
pub fn read_images(path: &Path) -> Result<Images> {
    let (dims, pixels) = read(path, IMAGE_MAGIC, "image", 3)?;
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an IDX label file (magic 2049). Labels are not range-checked here.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let (_, labels) = read(path, LABEL_MAGIC, "label", 1)?;
    Ok(labels)
}

/// Reads an IDX file of unsigned bytes with `ndims` dimensions; returns the dimensions and
/// the data, which is checked to be exactly as long as they say.
fn read(path: &Path, magic: u32, kind: &str, ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let (mut reader, gz) = open(path)?;
    let after = if gz { " after decompression" } else { "" };
    let fail = |e: io::Error| read_failure(path, gz, e);
    let dims = read_header(&mut reader, path, gz, magic, kind, ndims)?;
    let what = match ndims {
        3 => format!(
            "{} of {}×{}",
            plural(dims[0] as u64, "image"),
            dims[1],
            dims[2]
        ),
        _ => plural(dims[0] as u64, kind),
    };
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|n| *n <= isize::MAX as u64)
        .ok_or_else(|| data_err(path, format!("the header declares {what}: too large")))?;
    let data = read_up_to(&mut reader, expected + 1).map_err(fail)?;
    if (data.len() as u64) < expected {
        return Err(data_err(
            path,
            format!(
                "truncated: the header declares {what} ({}), but only {} follow{after}",
                plural(expected, "byte"),
                plural(data.len() as u64, "byte")
            ),
        ));
    }
    if data.len() as u64 > expected {
        let extra = 1 + io::copy(&mut reader, &mut io::sink()).map_err(fail)?;
        return Err(data_err(
            path,
            format!(
                "{} after the {what} the header declares{after}",
                plural(extra, "extra byte")
            ),
        ));
    }
    Ok((dims, data))
}

/// The error for an I/O failure while reading `path`.
fn read_failure(path: &Path, gz: bool, e: io::Error) -> crate::error::Error {
    let verb = if gz {
        "cannot decompress (a truncated or corrupt gzip file)"
    } else {
        "cannot read"
    };
    data_err(path, format!("{verb}: {e}"))
}

/// Reads and checks the header of an IDX file of unsigned bytes with `ndims` dimensions
/// (magic number, dimensions, at least one item); returns the dimensions. `gz`: whether
/// `reader` decompresses, for messages.
fn read_header(
    reader: &mut dyn Read,
    path: &Path,
    gz: bool,
    magic: u32,
    kind: &str,
    ndims: usize,
) -> Result<Vec<usize>> {
    let after = if gz { " after decompression" } else { "" };
    let header_len = 4 + 4 * ndims;
    let header = read_up_to(reader, header_len as u64).map_err(|e| read_failure(path, gz, e))?;
    if header.len() < 4 {
        return Err(data_err(
            path,
            format!(
                "truncated: an IDX {kind} file starts with a {header_len}-byte header, but the \
                 file has only {}{after}",
                plural(header.len() as u64, "byte")
            ),
        ));
    }
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let found = word(0);
    if found != magic {
        let known = match found {
            IMAGE_MAGIC => ", an IDX image file",
            LABEL_MAGIC => ", an IDX label file",
            _ => "",
        };
        return Err(data_err(
            path,
            format!(
                "bad magic number {found} (0x{found:08x}{known}), expected {magic} (0x{magic:08x}, \
                 an IDX {kind} file of unsigned bytes with {ndims} dimension{})",
                if ndims == 1 { "" } else { "s" }
            ),
        ));
    }
    if header.len() < header_len {
        return Err(data_err(
            path,
            format!(
                "truncated: the header needs {header_len} bytes, but the file has only {}{after}",
                plural(header.len() as u64, "byte")
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims).map(|d| word(4 + 4 * d) as usize).collect();
    if dims[0] == 0 {
        return Err(data_err(path, format!("the header declares no {kind}s")));
    }
    Ok(dims)
}

/// Opens `path`, decompressing it if it starts with the gzip magic bytes; says whether it
/// does.
fn open(path: &Path) -> Result<(Box<dyn Read>, bool)> {
    let file = File::open(path).map_err(|e| data_err(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| data_err(path, format!("cannot read: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(MultiGzDecoder::new(reader)), true))
    } else {
        Ok((Box::new(reader), false))
    }
}

/// Reads at most `n` bytes; fewer only at the end of the data. Allocates as bytes arrive.
fn read_up_to(reader: &mut dyn Read, n: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n.min(1 << 24) as usize);
    reader.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;
    use crate::error::Error;
    use crate::fsutil::TempDir;

    /// The bytes of an IDX file of unsigned bytes.
    pub(crate) fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    pub(crate) fn write(path: &Path, bytes: &[u8], gz: bool) {
        let bytes = if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes.to_vec()
        };
        std::fs::write(path, bytes).unwrap();
    }

    /// Writes `{prefix}-images-idx3-ubyte[.gz]` and `{prefix}-labels-idx1-ubyte[.gz]` of
    /// 28×28 images.
    pub(crate) fn write_pair(dir: &Path, prefix: &str, images: &[u8], labels: &[u8], gz: bool) {
        let ext = if gz { ".gz" } else { "" };
        let n = labels.len() as u32;
        write(
            &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
            &idx_bytes(IMAGE_MAGIC, &[n, 28, 28], images),
            gz,
        );
        write(
            &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
            &idx_bytes(LABEL_MAGIC, &[n], labels),
            gz,
        );
    }

    fn pixels(n: usize) -> Vec<u8> {
        (0..n * 784).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The error's text, after checking it is a data error about `file`.
    fn data_error(e: Error, file: &Path) -> String {
        match &e {
            Error::Data { path, .. } => assert_eq!(path, file, "{e}"),
            other => panic!("expected a data error, got {other:?}"),
        }
        e.to_string()
    }

    #[test]
    fn reads_back_raw_and_gzipped() {
        for gz in [false, true] {
            let dir = TempDir::new("idx-roundtrip");
            let (a, b) = (pixels(3), pixels(2));
            write_pair(&dir.0, "train", &a, &[3, 0, 9], gz);
            write_pair(&dir.0, "t10k", &b, &[1, 2], !gz);
            let (train, test) = load(&dir.0, "mnist").unwrap();
            assert_eq!(train.images(), &a[..]);
            assert_eq!(train.labels(), &[3, 0, 9]);
            assert_eq!(test.images(), &b[..]);
            assert_eq!(test.labels(), &[1, 2]);
            assert_eq!(train.input(), INPUT);
            assert_eq!(train.name(), "mnist train");
        }
    }

    #[test]
    fn raw_is_preferred_and_dotted_names_are_found() {
        let dir = TempDir::new("idx-prefer");
        write(&dir.0.join("x-idx3-ubyte"), b"raw", false);
        write(&dir.0.join("x-idx3-ubyte.gz"), b"gz", true);
        assert_eq!(
            find(&dir.0, "x-idx3-ubyte"),
            Some(dir.0.join("x-idx3-ubyte"))
        );
        write(&dir.0.join("y.idx1-ubyte"), b"", false);
        assert_eq!(
            find(&dir.0, "y-idx1-ubyte"),
            Some(dir.0.join("y.idx1-ubyte"))
        );
        assert_eq!(find(&dir.0, "z-idx1-ubyte"), None);
    }

    #[test]
    fn missing_files_are_all_named() {
        let dir = TempDir::new("idx-missing");
        write_pair(&dir.0, "train", &pixels(1), &[0], false);
        let e = data_error(load(&dir.0, "mnist").unwrap_err(), &dir.0);
        assert!(
            e.contains("missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"),
            "{e}"
        );
        let nowhere = dir.0.join("nowhere");
        let e = data_error(load(&nowhere, "mnist").unwrap_err(), &nowhere);
        assert!(e.contains("no such directory"), "{e}");
    }

    /// Writes a good test pair and the given training files, then loads.
    fn load_with(tag: &str, images: &[u8], labels: &[u8], gz: bool) -> (TempDir, Error) {
        let dir = TempDir::new(tag);
        write_pair(&dir.0, "t10k", &pixels(1), &[0], false);
        let ext = if gz { ".gz" } else { "" };
        write(&dir.0.join(format!("{TRAIN_IMAGES}{ext}")), images, gz);
        write(&dir.0.join(format!("{TRAIN_LABELS}{ext}")), labels, gz);
        let e = load(&dir.0, "mnist").unwrap_err();
        (dir, e)
    }

    fn good_labels(n: u32) -> Vec<u8> {
        idx_bytes(LABEL_MAGIC, &[n], &vec![1; n as usize])
    }

    #[test]
    fn corrupt_files_give_errors_naming_them() {
        for gz in [false, true] {
            let ext = if gz { ".gz" } else { "" };
            let images = |d: &TempDir| d.0.join(format!("{TRAIN_IMAGES}{ext}"));
            let labels = |d: &TempDir| d.0.join(format!("{TRAIN_LABELS}{ext}"));
            let good_images = idx_bytes(IMAGE_MAGIC, &[2, 28, 28], &pixels(2));

            // Bad magic: a label file where images belong, and junk.
            let (d, e) = load_with("idx-magic", &good_labels(2), &good_labels(2), gz);
            let e = data_error(e, &images(&d));
            assert!(
                e.contains("bad magic number 2049") && e.contains("label file"),
                "{e}"
            );
            assert!(e.contains("expected 2051"), "{e}");
            let mut junk = good_images.clone();
            junk[3] = 0x99;
            let (d, e) = load_with("idx-magic2", &junk, &good_labels(2), gz);
            assert!(data_error(e, &images(&d)).contains("bad magic number"));

            // Truncated header, truncated data, extra bytes.
            let (d, e) = load_with("idx-head", &good_images[..10], &good_labels(2), gz);
            let e = data_error(e, &images(&d));
            assert!(e.contains("truncated: the header needs 16 bytes"), "{e}");
            assert!(e.contains("only 10 bytes"), "{e}");
            let (d, e) = load_with("idx-tiny", &good_images[..2], &good_labels(2), gz);
            assert!(data_error(e, &images(&d)).contains("only 2 bytes"));
            let short = &good_images[..good_images.len() - 5];
            let (d, e) = load_with("idx-short", short, &good_labels(2), gz);
            let e = data_error(e, &images(&d));
            assert!(e.contains("declares 2 images of 28×28 (1568 bytes)"), "{e}");
            assert!(e.contains("only 1563 bytes follow"), "{e}");
            let mut long = good_images.clone();
            long.extend([0; 3]);
            let (d, e) = load_with("idx-long", &long, &good_labels(2), gz);
            let e = data_error(e, &images(&d));
            assert!(e.contains("3 extra bytes after the 2 images"), "{e}");

            // Wrong dimensions.
            let odd = idx_bytes(IMAGE_MAGIC, &[2, 28, 27], &vec![0; 2 * 28 * 27]);
            let (d, e) = load_with("idx-dims", &odd, &good_labels(2), gz);
            assert!(data_error(e, &images(&d)).contains("images are 28×27, expected 28×28"));

            // Counts disagree; label out of range.
            let (d, e) = load_with("idx-count", &good_images, &good_labels(3), gz);
            let e = data_error(e, &labels(&d));
            assert!(
                e.contains("has 3 labels but") && e.contains("has 2 images"),
                "{e}"
            );
            let bad = idx_bytes(LABEL_MAGIC, &[2], &[4, 10]);
            let (d, e) = load_with("idx-range", &good_images, &bad, gz);
            let e = data_error(e, &labels(&d));
            assert!(e.contains("label 10 of item 1 is out of range"), "{e}");

            // Declares nothing; declares more than exists (no huge allocation).
            let empty = idx_bytes(IMAGE_MAGIC, &[0, 28, 28], &[]);
            let (d, e) = load_with("idx-empty", &empty, &good_labels(2), gz);
            assert!(data_error(e, &images(&d)).contains("declares no images"));
            let huge = idx_bytes(IMAGE_MAGIC, &[u32::MAX, 28, 28], &pixels(1));
            let (d, e) = load_with("idx-huge", &huge, &good_labels(2), gz);
            assert!(data_error(e, &images(&d)).contains("truncated"));
        }
    }

    #[test]
    fn broken_gzip_is_an_error_naming_the_file() {
        let dir = TempDir::new("idx-gzip");
        write_pair(&dir.0, "train", &pixels(2), &[0, 1], true);
        write_pair(&dir.0, "t10k", &pixels(1), &[0], false);
        let path = dir.0.join(format!("{TRAIN_IMAGES}.gz"));
        let bytes = std::fs::read(&path).unwrap();
        // Cut the stream short, then corrupt it.
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = data_error(load(&dir.0, "mnist").unwrap_err(), &path);
        assert!(e.contains("decompress") || e.contains("truncated"), "{e}");
        let mut bad = bytes.clone();
        for b in &mut bad[12..40] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bad).unwrap();
        let e = data_error(load(&dir.0, "mnist").unwrap_err(), &path);
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    /// Reads Debian's `dataset-fashion-mnist` files where they are installed.
    #[test]
    fn reads_installed_fashion_mnist() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if find(dir, TRAIN_IMAGES).is_none() {
            println!(
                "skipped: no Fashion-MNIST in {} (apt-get install dataset-fashion-mnist)",
                dir.display()
            );
            return;
        }
        let (train, test) = load(dir, "fashion-mnist").unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        assert_eq!(train.input(), INPUT);
        assert_eq!(train.image_len(), 784);
        assert!(train.labels().iter().chain(test.labels()).all(|l| *l < 10));
        // Balanced classes: 6,000 and 1,000 of each.
        for (set, per) in [(&train, 6000), (&test, 1000)] {
            let mut counts = [0; 10];
            for l in set.labels() {
                counts[*l as usize] += 1;
            }
            assert_eq!(counts, [per; 10]);
        }
    }
}
