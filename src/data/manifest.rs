//! The CSV-manifest source (`Data::Csv`): reads `path,label` rows without decoding images.
//!
//! A manifest has two fields a row (spaces around them trimmed, blank lines skipped); a
//! first row whose fields are a path-like and a label-like name (`path,label`,
//! `file,class`, ... any case) is a header. Paths are relative to the root folder. Labels
//! are class indices when every label of the training manifest is a whole number (classes:
//! 0 to the largest), else class names (classes: the training manifest's names, sorted).
//! A validation or test manifest's labels must be training classes. Declared class names
//! (`class_names`) are the classes instead: labels that are names must be among them, and
//! index labels (every training label a whole number) must be below their count. Errors
//! name the manifest and the row (the line number in the file).

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

/// The manifests of an image source: the training one and optional validation and test
/// ones, with the folder their paths are relative to.
#[derive(Debug, Clone, Copy)]
pub struct Manifests<'a> {
    pub file: &'a Path,
    pub root: &'a Path,
    pub val: Option<&'a Path>,
    pub test: Option<&'a Path>,
}

/// How a manifest's labels name classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Labels {
    /// Each label is a class name.
    Names,
    /// Each label is a class index (into the declared names).
    Indices,
}

/// Lists the manifests, labelled by `declared` class names when given.
pub fn list(m: Manifests, declared: Option<&[String]>) -> Result<Listing> {
    let rows = read_rows(m.file, m.root)?;
    if rows.is_empty() {
        return Err(data_err(
            m.file,
            "the manifest has no rows (expected path,label rows)",
        ));
    }
    let (classes, labels) = match declared {
        Some(names) if all_indices(&rows) => (names.to_vec(), Labels::Indices),
        Some(names) => (names.to_vec(), Labels::Names),
        None => (classes_of(&rows), Labels::Names),
    };
    let declared = declared.is_some();
    let labelled = |p: &Path, rows| items(p, rows, &classes, labels, declared);
    let part = |p: Option<&Path>| -> Result<Option<Vec<Item>>> {
        p.map(|p| labelled(p, read_rows(p, m.root)?)).transpose()
    };
    Ok(Listing {
        val: part(m.val)?,
        test: part(m.test)?,
        train: labelled(m.file, rows)?,
        classes,
    })
}

/// Whether every label is a whole number (a class index).
fn all_indices(rows: &[Row]) -> bool {
    rows.iter().all(|r| r.label.parse::<u32>().is_ok())
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

/// The rows as items labelled by their class's index; a label that is not a class (with
/// `Indices`, not below the number of classes) is an error naming the manifest and row.
/// `declared`: the classes are the spec's `class_names`, which the message points to.
fn items(
    file: &Path,
    rows: Vec<Row>,
    classes: &[String],
    labels: Labels,
    declared: bool,
) -> Result<Vec<Item>> {
    rows.into_iter()
        .map(|r| {
            let label = match labels {
                Labels::Names => classes.iter().position(|c| *c == r.label),
                Labels::Indices => r.label.parse::<usize>().ok().filter(|&i| i < classes.len()),
            };
            let label = label.ok_or_else(|| not_a_class(file, &r, classes, labels, declared))?;
            Ok(Item {
                path: r.path,
                label: label as u32,
                row: Some(r.row),
            })
        })
        .collect()
}

/// The error of a row whose label is not a class.
fn not_a_class(
    file: &Path,
    r: &Row,
    classes: &[String],
    labels: Labels,
    declared: bool,
) -> crate::error::Error {
    let n = classes.len();
    let message = match (labels, declared) {
        (Labels::Names, false) => format!(
            "row {}: label {:?} is not one of the {n} training classes ({})",
            r.row,
            r.label,
            preview(classes)
        ),
        (Labels::Names, true) => format!(
            "row {}: label {:?} is not one of the {n} declared `class_names` ({})\n  = help: \
             add {:?} to the data's `class_names`, or fix the row",
            r.row,
            r.label,
            preview(classes),
            r.label
        ),
        (Labels::Indices, _) => format!(
            "row {}: label {:?} is not a class index below the {n} declared `class_names` ({})\n  \
             = help: add the missing names to the data's `class_names` (index labels name \
             them in order), or fix the row",
            r.row,
            r.label,
            preview(classes)
        ),
    };
    data_err(file, message)
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
    use crate::fsutil::TempDir;

    fn mf<'a>(
        file: &'a Path,
        root: &'a Path,
        val: Option<&'a Path>,
        test: Option<&'a Path>,
    ) -> Manifests<'a> {
        Manifests {
            file,
            root,
            val,
            test,
        }
    }

    /// Issue #18: declared class names fix the label order; a name label must be one of
    /// them, an index label below their count; the errors name the manifest and row.
    #[test]
    fn declared_names_label_the_rows() {
        let d = TempDir::new("manifest-declared");
        let f = d.0.join("m.csv");
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dog_cat = names(&["dog", "cat"]);
        std::fs::write(&f, "path,label\na.png,cat\nb.png,dog\n").unwrap();
        let l = list(mf(&f, &d.0, None, None), Some(&dog_cat)).unwrap();
        assert_eq!(l.classes, dog_cat);
        let got: Vec<_> = l.train.iter().map(|i| i.label).collect();
        assert_eq!(got, [1, 0], "labels follow the declared order");
        let t = d.0.join("t.csv");
        std::fs::write(&t, "c.png,dog\nd.png,cow\n").unwrap();
        let e = list(mf(&f, &d.0, None, Some(&t)), Some(&dog_cat))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.csv: row 2: label \"cow\" is not one of the 2 declared `class_names`")
                && e.contains("add \"cow\" to the data's `class_names`"),
            "{e}"
        );
        // Index labels take their names from the list, and must be below its length.
        std::fs::write(&f, "a.png,1\nb.png,0\n").unwrap();
        let l = list(mf(&f, &d.0, None, None), Some(&dog_cat)).unwrap();
        assert_eq!((l.classes, l.train[0].label), (dog_cat.clone(), 1));
        std::fs::write(&f, "a.png,1\nb.png,2\n").unwrap();
        let e = list(mf(&f, &d.0, None, None), Some(&dog_cat))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.csv: row 2: label \"2\" is not a class index below the 2 declared"),
            "{e}"
        );
    }

    #[test]
    fn names_indices_and_headers() {
        let d = TempDir::new("manifest");
        let f = d.0.join("m.csv");
        std::fs::write(&f, "path,label\na.png, dog\nb.png,cat\n\nc.png,dog\n").unwrap();
        let l = list(mf(&f, &d.0, None, None), None).unwrap();
        assert_eq!(l.classes, vec!["cat", "dog"]);
        let got: Vec<_> = l.train.iter().map(|i| (i.label, i.row)).collect();
        assert_eq!(got, vec![(1, Some(2)), (0, Some(3)), (1, Some(5))]);
        assert_eq!(l.train[0].path, d.0.join("a.png"));
        std::fs::write(&f, "a.png,2\nb.png,0\n").unwrap();
        let t = d.0.join("t.csv");
        std::fs::write(&t, "c.png,1\nd.png,3\n").unwrap();
        let e = list(mf(&f, &d.0, None, Some(&t)), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.csv") && e.contains("row 2") && e.contains("\"3\""),
            "{e}"
        );
        std::fs::write(&t, "c.png,1\n").unwrap();
        let l = list(mf(&f, &d.0, None, Some(&t)), None).unwrap();
        assert_eq!(l.classes, vec!["0", "1", "2"]);
        assert_eq!(l.test.unwrap()[0].label, 1);
    }

    #[test]
    fn bad_rows_name_the_row() {
        let d = TempDir::new("manifest-bad");
        let f = d.0.join("m.csv");
        std::fs::write(&f, "a.png,1\nb.png\n").unwrap();
        let e = list(mf(&f, &d.0, None, None), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.csv") && e.contains("row 2 has 1 fields"),
            "{e}"
        );
        std::fs::write(&f, "path,label\n").unwrap();
        let e = list(mf(&f, &d.0, None, None), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rows"), "{e}");
        let e = list(mf(&d.0.join("none.csv"), &d.0, None, None), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.csv") && e.contains("cannot open"), "{e}");
    }
}
