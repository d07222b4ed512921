//! The CIFAR-10 binary reader (3×32×32 images, 10 classes).
//!
//! A directory holds `data_batch_1.bin` .. `data_batch_5.bin` (the training set, read in
//! that order) and `test_batch.bin`; a directory whose `cifar-10-batches-bin/` subfolder
//! holds them (the unpacked archive) works too. Each file is a sequence of 3073-byte
//! records: one label byte, then the R, G and B planes, each 32×32 row-major, which is
//! already the `[C, H, W]` layout of a [`Dataset`] image. The official files hold 10,000
//! records each; any whole number of records is accepted. Checked: every file exists (the
//! missing ones are named together), sizes are a whole number of records, labels are below
//! 10.

use std::path::{Path, PathBuf};

use super::{Dataset, data_err, plural};
use crate::error::Result;
use crate::spec::space::Input;

/// Bytes per record: 1 label byte and 3×32×32 pixels.
pub const RECORD: usize = 1 + 3 * 32 * 32;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
/// The folder the official archive unpacks to.
pub const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

/// The shape of CIFAR-10.
pub const INPUT: Input = Input {
    channels: 3,
    size: 32,
    classes: 10,
};

/// Reads the training set (the five batches in order) and the test set from `dir`.
pub fn load(dir: &Path) -> Result<(Dataset, Dataset)> {
    let base = find_all(dir)?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in TRAIN_FILES {
        let (i, l) = read_batch(&base.join(f))?;
        images.extend_from_slice(&i);
        labels.extend_from_slice(&l);
    }
    let train = Dataset::new("cifar-10 train", INPUT, images, labels)?;
    let (images, labels) = read_batch(&base.join(TEST_FILE))?;
    let test = Dataset::new("cifar-10 test", INPUT, images, labels)?;
    Ok((train, test))
}

/// Checks what [`load`] would read without reading it: the six batch files exist and each
/// is a non-empty whole number of records (from its size alone). Returns the number of
/// training and test images.
pub fn probe(dir: &Path) -> Result<(usize, usize)> {
    let base = find_all(dir)?;
    let mut train = 0;
    for f in TRAIN_FILES {
        train += records_in(&base.join(f))?;
    }
    Ok((train, records_in(&base.join(TEST_FILE))?))
}

/// The six batch files [`load`] reads.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let base = find_all(dir)?;
    Ok(TRAIN_FILES
        .iter()
        .copied()
        .chain([TEST_FILE])
        .map(|f| base.join(f))
        .collect())
}

/// The folder holding the batch files ([`batches_dir`]); the error names every missing
/// file at once.
fn find_all(dir: &Path) -> Result<PathBuf> {
    let base = batches_dir(dir);
    let missing: Vec<&str> = TRAIN_FILES
        .iter()
        .copied()
        .chain([TEST_FILE])
        .filter(|f| !base.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(base);
    }
    let what = if base.is_dir() {
        format!("missing {}", missing.join(", "))
    } else {
        "no such directory (expected the CIFAR-10 binary batches in it)".to_string()
    };
    Err(data_err(&base, what))
}

/// The number of records in a batch file, from its size; errors unless it is a non-empty
/// whole number of records.
fn records_in(path: &Path) -> Result<usize> {
    let len = std::fs::metadata(path)
        .map_err(|e| data_err(path, format!("cannot read: {e}")))?
        .len();
    if len == 0 || len % RECORD as u64 != 0 {
        return Err(data_err(
            path,
            format!(
                "{} is not a whole, non-zero number of {RECORD}-byte records (1 label byte and \
                 3×32×32 pixels)",
                plural(len, "byte")
            ),
        ));
    }
    Ok((len / RECORD as u64) as usize)
}

/// Reads one batch file.
///
/// # Shapes
///
/// Returns images u8 `[N, 3, 32, 32]` and labels `[N]`, N the number of records.
pub fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    let bytes = std::fs::read(path).map_err(|e| data_err(path, format!("cannot read: {e}")))?;
    let (records, extra) = (bytes.len() / RECORD, bytes.len() % RECORD);
    if bytes.is_empty() {
        return Err(data_err(path, "empty: no records"));
    }
    if extra != 0 {
        return Err(data_err(
            path,
            format!(
                "{} is not a whole number of {RECORD}-byte records (1 label byte and 3×32×32 \
                 pixels): {} and {}, or {} missing from the last record",
                plural(bytes.len() as u64, "byte"),
                plural(records as u64, "record"),
                plural(extra as u64, "extra byte"),
                plural((RECORD - extra) as u64, "byte")
            ),
        ));
    }
    let mut images = Vec::with_capacity(records * (RECORD - 1));
    let mut labels = Vec::with_capacity(records);
    for (i, r) in bytes.chunks_exact(RECORD).enumerate() {
        if u32::from(r[0]) >= INPUT.classes {
            return Err(data_err(
                path,
                format!(
                    "record {i} (byte offset {}) has label {}: CIFAR-10 labels are 0 to 9",
                    i * RECORD,
                    r[0]
                ),
            ));
        }
        labels.push(u32::from(r[0]));
        images.extend_from_slice(&r[1..]);
    }
    Ok((images, labels))
}

/// The directory [`load`] reads from: `dir`, or its `cifar-10-batches-bin` subfolder when
/// `dir` holds none of the batch files and that subfolder exists.
pub fn batches_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(ARCHIVE_DIR);
    let here = TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .any(|f| dir.join(f).is_file());
    if !here && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::fsutil::TempDir;

    /// Records with labels `labels` and pixel bytes derived from `salt`.
    fn records(labels: &[u8], salt: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            out.push(*l);
            out.extend((0..RECORD - 1).map(|p| ((p * 31 + i * 17 + salt) % 256) as u8));
        }
        out
    }

    fn write_all(dir: &Path) -> Vec<Vec<u8>> {
        let mut written = Vec::new();
        for (k, f) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
            let bytes = records(&[k as u8, (k as u8 + 3) % 10], k);
            std::fs::write(dir.join(f), &bytes).unwrap();
            written.push(bytes);
        }
        written
    }

    fn data_error(e: Error, file: &Path) -> String {
        match &e {
            Error::Data { path, .. } => assert_eq!(path, file, "{e}"),
            other => panic!("expected a data error, got {other:?}"),
        }
        e.to_string()
    }

    #[test]
    fn reads_back_exactly() {
        let dir = TempDir::new("cifar-roundtrip");
        let written = write_all(&dir.0);
        let (train, test) = load(&dir.0).unwrap();
        assert_eq!((train.len(), test.len()), (10, 2));
        assert_eq!(train.input(), INPUT);
        for (k, bytes) in written.iter().enumerate() {
            let set = if k < 5 { &train } else { &test };
            let base = if k < 5 { 2 * k } else { 0 };
            for r in 0..2 {
                let rec = &bytes[r * RECORD..(r + 1) * RECORD];
                assert_eq!(set.label(base + r), u32::from(rec[0]));
                assert_eq!(set.image(base + r), &rec[1..]);
            }
        }
        // Plane layout: byte 1 + 1024 of a record is the first green pixel, channel 1.
        let rec = &written[0][..RECORD];
        assert_eq!(train.image(0)[1024], rec[1 + 1024]);
    }

    #[test]
    fn finds_the_archive_folder() {
        let dir = TempDir::new("cifar-nested");
        let nested = dir.0.join(ARCHIVE_DIR);
        std::fs::create_dir(&nested).unwrap();
        write_all(&nested);
        assert_eq!(batches_dir(&dir.0), nested);
        assert_eq!(load(&dir.0).unwrap().0.len(), 10);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = TempDir::new("cifar-missing");
        write_all(&dir.0);
        std::fs::remove_file(dir.0.join("data_batch_3.bin")).unwrap();
        std::fs::remove_file(dir.0.join(TEST_FILE)).unwrap();
        let e = data_error(load(&dir.0).unwrap_err(), &dir.0);
        assert!(
            e.contains("missing data_batch_3.bin, test_batch.bin"),
            "{e}"
        );
        let nowhere = dir.0.join("nowhere");
        let e = data_error(load(&nowhere).unwrap_err(), &nowhere);
        assert!(e.contains("no such directory"), "{e}");
    }

    #[test]
    fn bad_sizes_say_how_many_bytes() {
        let dir = TempDir::new("cifar-size");
        write_all(&dir.0);
        let path = dir.0.join("data_batch_2.bin");
        let mut bytes = records(&[1, 2], 0);
        bytes.push(7);
        std::fs::write(&path, &bytes).unwrap();
        let e = data_error(load(&dir.0).unwrap_err(), &path);
        assert!(
            e.contains("6147 bytes is not a whole number of 3073-byte records"),
            "{e}"
        );
        assert!(
            e.contains("2 records and 1 extra byte, or 3072 bytes missing"),
            "{e}"
        );
        std::fs::write(&path, &bytes[..RECORD + 100]).unwrap();
        let e = data_error(load(&dir.0).unwrap_err(), &path);
        assert!(
            e.contains("1 record and 100 extra bytes, or 2973 bytes missing"),
            "{e}"
        );
        std::fs::write(&path, []).unwrap();
        let e = data_error(load(&dir.0).unwrap_err(), &path);
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn labels_out_of_range_are_errors() {
        let dir = TempDir::new("cifar-label");
        write_all(&dir.0);
        let path = dir.0.join(TEST_FILE);
        std::fs::write(&path, records(&[9, 10], 0)).unwrap();
        let e = data_error(load(&dir.0).unwrap_err(), &path);
        assert!(
            e.contains("record 1 (byte offset 3073) has label 10"),
            "{e}"
        );
    }
}
