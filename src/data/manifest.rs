//! The CSV-manifest source (`Data::Csv`): reads `path,label` rows without decoding images.
//!
//! A manifest has two fields a row (spaces around them trimmed, blank lines skipped); a
//! first row whose fields are a path-like and a label-like name (`path,label`,
//! `file,class`, ... any case) is a header. Paths are relative to the root folder. Labels
//! are class indices when every label of the training manifest is a whole number (classes:
//! 0 to the largest), else class names (classes: the training manifest's names, sorted).
//! A validation or test manifest's labels must be training classes. Errors name the
//! manifest and the row (the line number in the file).

use std::path::{Path, PathBuf};

use super::data_err;
use super::decode::Item;
use super::listing::Listing;
use crate::error::Result;

/// One row: its 1-based number, the image path (joined to the root) and the raw label.
struct Row {
    row: usize,
    path: PathBuf,
    label: String,
}

/// Lists a training manifest and optional validation and test manifests.
pub fn list(file: &Path, root: &Path, val: Option<&Path>, test: Option<&Path>) -> Result<Listing> {
    let rows = read_rows(file, root)?;
    if rows.is_empty() {
        return Err(data_err(
            file,
            "the manifest has no rows (expected path,label rows)",
        ));
    }
    let classes = classes_of(&rows);
    let part = |p: Option<&Path>| -> Result<Option<Vec<Item>>> {
        p.map(|p| items(p, read_rows(p, root)?, &classes))
            .transpose()
    };
    Ok(Listing {
        val: part(val)?,
        test: part(test)?,
        train: items(file, rows, &classes)?,
        classes,
    })
}

/// Class names: `"0"` to the largest label when every label is a whole number, else the
/// distinct labels sorted.
fn classes_of(rows: &[Row]) -> Vec<String> {
    let indices: Option<Vec<u32>> = rows.iter().map(|r| r.label.parse().ok()).collect();
    match indices.and_then(|i| i.into_iter().max()) {
        Some(max) => (0..=max).map(|c| c.to_string()).collect(),
        None => {
            let mut names: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
            names.sort();
            names.dedup();
            names
        }
    }
}

/// The rows as items labelled by their class's index; a label that is not a class is an
/// error naming the manifest and row.
fn items(file: &Path, rows: Vec<Row>, classes: &[String]) -> Result<Vec<Item>> {
    rows.into_iter()
        .map(|r| {
            let label = classes.iter().position(|c| *c == r.label).ok_or_else(|| {
                data_err(
                    file,
                    format!(
                        "row {}: label {:?} is not one of the {} training classes ({})",
                        r.row,
                        r.label,
                        classes.len(),
                        preview(classes)
                    ),
                )
            })?;
            Ok(Item {
                path: r.path,
                label: label as u32,
                row: Some(r.row),
            })
        })
        .collect()
}

/// `a, b, c` or `a, b, c, ... (12 in all)`.
fn preview(classes: &[String]) -> String {
    if classes.len() <= 8 {
        return classes.join(", ");
    }
    format!(
        "{}, ... ({} in all)",
        classes[..8].join(", "),
        classes.len()
    )
}

/// Reads a manifest's rows, the header left out.
fn read_rows(file: &Path, root: &Path) -> Result<Vec<Row>> {
    super::regular_file(file, "manifest")?;
    let bytes = std::fs::read(file)
        .map_err(|e| data_err(file, format!("cannot open the manifest: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let mut rows = Vec::new();
    let mut lines = LineCounter::default();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| data_err(file, format!("row {}: {e}", i + 1)))?;
        // A record's position is where the previous one ended: skip the blank lines.
        let mut at = record.position().map_or(0, |p| p.byte() as usize);
        while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
            at += 1;
        }
        let row = lines.line_at(&bytes, at);
        if record.len() != 2 {
            return Err(data_err(
                file,
                format!(
                    "row {row} has {} fields; expected 2: path,label",
                    record.len()
                ),
            ));
        }
        if i == 0 && is_header(&record[0], &record[1]) {
            continue;
        }
        if record[0].is_empty() || record[1].is_empty() {
            return Err(data_err(file, format!("row {row}: an empty path or label")));
        }
        rows.push(Row {
            row,
            path: root.join(&record[0]),
            label: record[1].to_string(),
        });
    }
    Ok(rows)
}

/// Line numbers of byte offsets met in increasing order (blank lines counted).
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    /// The 1-based line of byte `at`.
    fn line_at(&mut self, bytes: &[u8], at: usize) -> usize {
        let at = at.clamp(self.offset, bytes.len());
        self.line += bytes[self.offset..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = at;
        self.line + 1
    }
}

/// Whether a first row names the columns.
fn is_header(path: &str, label: &str) -> bool {
    let p = path.to_ascii_lowercase();
    let l = label.to_ascii_lowercase();
    ["path", "file", "filename", "file_name", "image", "filepath"].contains(&p.as_str())
        && ["label", "class", "target", "category", "class_name"].contains(&l.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TempDir;

    #[test]
    fn names_indices_and_headers() {
        let d = TempDir::new("manifest");
        let f = d.0.join("m.csv");
        std::fs::write(&f, "path,label\na.png, dog\nb.png,cat\n\nc.png,dog\n").unwrap();
        let l = list(&f, &d.0, None, None).unwrap();
        assert_eq!(l.classes, vec!["cat", "dog"]);
        let got: Vec<_> = l.train.iter().map(|i| (i.label, i.row)).collect();
        assert_eq!(got, vec![(1, Some(2)), (0, Some(3)), (1, Some(5))]);
        assert_eq!(l.train[0].path, d.0.join("a.png"));
        std::fs::write(&f, "a.png,2\nb.png,0\n").unwrap();
        let t = d.0.join("t.csv");
        std::fs::write(&t, "c.png,1\nd.png,3\n").unwrap();
        let e = list(&f, &d.0, None, Some(&t)).unwrap_err().to_string();
        assert!(
            e.contains("t.csv") && e.contains("row 2") && e.contains("\"3\""),
            "{e}"
        );
        std::fs::write(&t, "c.png,1\n").unwrap();
        let l = list(&f, &d.0, None, Some(&t)).unwrap();
        assert_eq!(l.classes, vec!["0", "1", "2"]);
        assert_eq!(l.test.unwrap()[0].label, 1);
    }

    #[test]
    fn bad_rows_name_the_row() {
        let d = TempDir::new("manifest-bad");
        let f = d.0.join("m.csv");
        std::fs::write(&f, "a.png,1\nb.png\n").unwrap();
        let e = list(&f, &d.0, None, None).unwrap_err().to_string();
        assert!(
            e.contains("m.csv") && e.contains("row 2 has 1 fields"),
            "{e}"
        );
        std::fs::write(&f, "path,label\n").unwrap();
        let e = list(&f, &d.0, None, None).unwrap_err().to_string();
        assert!(e.contains("no rows"), "{e}");
        let e = list(&d.0.join("none.csv"), &d.0, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.csv") && e.contains("cannot open"), "{e}");
    }
}
