//! Benchmark tables: every architecture of a space with its measured accuracies, read from
//! a CSV file (gzipped when its name ends in `.gz`) with one architecture-string column
//! (`cellstr` or `arch_str`, NAS-Bench-201 notation) and numeric columns in percent.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A loaded table.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    /// Numeric column names, in file order.
    pub columns: Vec<String>,
    /// Architecture string → row.
    rows: HashMap<String, usize>,
    /// Per row, the values of `columns` (NaN where a cell is empty or not a number).
    values: Vec<Vec<f64>>,
    /// Per row, its architecture string.
    archs: Vec<String>,
}

/// The names an architecture-string column may have.
pub const ARCH_COLUMNS: [&str; 2] = ["cellstr", "arch_str"];

impl Table {
    /// Reads `path`. Errors name the file and, for a bad row, its line.
    pub fn load(path: &Path) -> Result<Table> {
        let bad = |m: String| Error::Input(format!("{}: {m}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read the table: {e}")))?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut s)
                .map_err(|e| bad(format!("not a gzipped text file: {e}")))?;
            s
        } else {
            String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| bad(format!("no CSV header: {e}")))?
            .iter()
            .map(String::from)
            .collect();
        let arch_col = header
            .iter()
            .position(|h| ARCH_COLUMNS.contains(&h.as_str()))
            .ok_or_else(|| {
                bad(format!(
                    "no architecture column (named {}) among {}",
                    ARCH_COLUMNS.join(" or "),
                    header.join(", ")
                ))
            })?;
        let numeric: Vec<usize> = (0..header.len()).filter(|&i| i != arch_col).collect();
        let mut table = Table {
            path: path.to_path_buf(),
            columns: numeric.iter().map(|&i| header[i].clone()).collect(),
            rows: HashMap::new(),
            values: Vec::new(),
            archs: Vec::new(),
        };
        for (r, record) in reader.records().enumerate() {
            let record = record.map_err(|e| bad(format!("line {}: {e}", r + 2)))?;
            let arch = record.get(arch_col).unwrap_or("").trim().to_string();
            if arch.is_empty() {
                return Err(bad(format!("line {}: no architecture string", r + 2)));
            }
            let values = numeric
                .iter()
                .map(|&i| {
                    record
                        .get(i)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(f64::NAN)
                })
                .collect();
            if table
                .rows
                .insert(arch.clone(), table.values.len())
                .is_some()
            {
                return Err(bad(format!(
                    "line {}: architecture {arch} is listed twice",
                    r + 2
                )));
            }
            table.values.push(values);
            table.archs.push(arch);
        }
        if table.values.is_empty() {
            return Err(bad("the table has no rows".into()));
        }
        Ok(table)
    }

    /// The index of a numeric column.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The row of an architecture string.
    pub fn row(&self, arch: &str) -> Option<usize> {
        self.rows.get(arch).copied()
    }

    /// The value of `column` in `row`.
    pub fn value(&self, row: usize, column: usize) -> f64 {
        self.values[row][column]
    }

    /// The architecture string of `row`.
    pub fn arch(&self, row: usize) -> &str {
        &self.archs[row]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_gzipped_tables_and_names_bad_lines() {
        let tmp = crate::fsutil::TempDir::new("table");
        let dir = tmp.join("table");
        std::fs::create_dir_all(&dir).unwrap();
        let text = "arch,cellstr,acc,val\n0,|a~0|,50.5,40\n1,|b~0|,60,x\n";
        let plain = dir.join("t.csv");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.join("t.csv.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        for p in [&plain, &gz] {
            let t = Table::load(p).unwrap();
            assert_eq!(t.columns, ["arch", "acc", "val"]);
            let r = t.row("|b~0|").unwrap();
            assert_eq!(t.value(r, t.column("acc").unwrap()), 60.0);
            assert!(t.value(r, t.column("val").unwrap()).is_nan());
        }
        std::fs::write(&plain, "arch,cellstr\n0,|a~0|\n1,|a~0|\n").unwrap();
        let e = Table::load(&plain).unwrap_err().to_string();
        assert!(e.contains("t.csv: line 3") && e.contains("twice"), "{e}");
        std::fs::write(&plain, "arch,acc\n0,1\n").unwrap();
        let e = Table::load(&plain).unwrap_err().to_string();
        assert!(e.contains("no architecture column"), "{e}");
    }
}
