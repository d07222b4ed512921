//! What nas-pipe reads from an ONNX file itself: a first-byte format check and the sizes
//! of the top-level graph's initializers (for a parameter count).
//!
//! ONNX Runtime parses the model; nothing here uses the `protobuf` crate (see the README on
//! RUSTSEC-2024-0437). The reader walks the protobuf wire format for exactly the three
//! messages it needs — `ModelProto.graph` (field 7) → `GraphProto.initializer` (field 5) →
//! `TensorProto.dims` (field 1) and `.data_type` (field 2) — without recursion, checking
//! every length against the buffer, so untrusted bytes give an error, never a panic, an
//! out-of-bounds read or a deep stack.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a model file, refusing one that cannot be an ONNX model. A missing or unreadable
/// file is an [`Error::Io`]; any other file an [`Error::Data`] (see [`not_onnx`]).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !looks_like_onnx(&bytes) {
        return Err(not_onnx(path, NOT_PROTOBUF));
    }
    Ok(bytes)
}

/// Why a file that fails [`looks_like_onnx`] was refused.
pub const NOT_PROTOBUF: &str = "it does not start like an ONNX protobuf";

/// The error for a file that is not an ONNX model: `PATH: not an ONNX model: WHY`.
pub fn not_onnx(path: &Path, why: &str) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: format!("not an ONNX model: {why}"),
    }
}

/// The first byte of an ONNX `ModelProto` as every writer emits it: the tag of one of its
/// fields (`ir_version` = 0x08 first in practice). Anything else is not an ONNX model.
const MODEL_FIRST_BYTES: [u8; 12] = [
    0x08, 0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42, 0x72, 0xa2, 0xca, 0xd2,
];

/// Whether `bytes` can start an ONNX model. A cheap filter for clear errors on other
/// files; passing it does not make a file a valid model.
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| MODEL_FIRST_BYTES.contains(b))
}

/// Sizes of the top-level graph's initializers (subgraph initializers are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Initializers {
    /// Number of initializer tensors.
    pub tensors: usize,
    /// Elements of floating-point initializers (FLOAT, FLOAT16, DOUBLE, BFLOAT16): the
    /// parameter count as ONNX stores it. It includes batch-norm running statistics, so it
    /// can exceed the trainable parameter count.
    pub float_elements: u64,
    /// Elements of all initializers (integer shape constants too).
    pub elements: u64,
}

/// Reads the initializer sizes of an ONNX model. Errors name what is malformed.
pub fn initializers(bytes: &[u8]) -> Result<Initializers, String> {
    let mut out = Initializers::default();
    let mut model = Reader::new(bytes);
    while let Some((field, value)) = model.next_field()? {
        let (7, Value::Len(graph)) = (field, value) else {
            continue;
        };
        let mut graph = Reader::new(graph);
        while let Some((field, value)) = graph.next_field()? {
            let (5, Value::Len(tensor)) = (field, value) else {
                continue;
            };
            let (elements, data_type) = tensor_size(tensor)?;
            out.tensors += 1;
            out.elements = out.elements.saturating_add(elements);
            if matches!(data_type, 1 | 10 | 11 | 16) {
                out.float_elements = out.float_elements.saturating_add(elements);
            }
        }
    }
    Ok(out)
}

/// Element count and `data_type` of a `TensorProto`.
fn tensor_size(bytes: &[u8]) -> Result<(u64, u64), String> {
    let mut elements: u64 = 1;
    let mut data_type = 0;
    let mut mul = |d: u64| -> Result<(), String> {
        // dims are int64; a negative one arrives as a huge varint.
        if d > i64::MAX as u64 {
            return Err("negative initializer dimension".into());
        }
        elements = elements
            .checked_mul(d)
            .ok_or("initializer size overflows")?;
        Ok(())
    };
    let mut t = Reader::new(bytes);
    while let Some((field, value)) = t.next_field()? {
        match (field, value) {
            (1, Value::Varint(d)) => mul(d)?,
            (1, Value::Len(packed)) => {
                let mut p = Reader::new(packed);
                while !p.done() {
                    mul(p.varint()?)?;
                }
            }
            (2, Value::Varint(v)) => data_type = v,
            _ => {}
        }
    }
    Ok((elements, data_type))
}

enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.buf.len())
            .ok_or("field length runs past the end of the message")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field number and value; `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.done() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = self.varint()?;
                Value::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        Ok(Some((tag >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint((field << 3) | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A TensorProto with unpacked dims (as the onnx Python package writes them) or packed.
    fn tensor(dims: &[u64], data_type: u64, packed: bool) -> Vec<u8> {
        let mut t = Vec::new();
        if packed {
            let mut p = Vec::new();
            for &d in dims {
                varint(d, &mut p);
            }
            len_field(1, &p, &mut t);
        } else {
            for &d in dims {
                varint(1 << 3, &mut t);
                varint(d, &mut t);
            }
        }
        varint(2 << 3, &mut t);
        varint(data_type, &mut t);
        len_field(8, b"name", &mut t);
        len_field(9, &[0; 8], &mut t);
        t
    }

    fn model(tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut g = Vec::new();
        len_field(2, b"graph", &mut g);
        for t in tensors {
            len_field(5, t, &mut g);
        }
        let mut m = vec![0x08, 8];
        len_field(2, b"producer", &mut m);
        len_field(7, &g, &mut m);
        m
    }

    #[test]
    fn counts_float_and_integer_initializers() {
        let m = model(&[
            tensor(&[4, 3, 3, 3], 1, false),
            tensor(&[4], 1, true),
            tensor(&[2], 7, false), // an INT64 shape constant
            tensor(&[], 1, false),  // a scalar
        ]);
        assert!(looks_like_onnx(&m));
        assert_eq!(
            initializers(&m),
            Ok(Initializers {
                tensors: 4,
                float_elements: 108 + 4 + 1,
                elements: 108 + 4 + 2 + 1,
            })
        );
    }

    #[test]
    fn reading_a_file_that_is_not_onnx_names_it() {
        let tmp = crate::fsutil::TempDir::new("notonnx");
        let dir = tmp.join("notonnx");
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("notes.txt");
        std::fs::write(&f, "hello\n").unwrap();
        assert_eq!(
            read(&f).unwrap_err().to_string(),
            format!(
                "{}: not an ONNX model: it does not start like an ONNX protobuf",
                f.display()
            )
        );
        let empty = dir.join("empty.onnx");
        std::fs::write(&empty, "").unwrap();
        assert!(
            read(&empty)
                .unwrap_err()
                .to_string()
                .ends_with("not an ONNX model: it does not start like an ONNX protobuf")
        );
        let missing = dir.join("missing.onnx");
        assert_eq!(
            read(&missing).unwrap_err().to_string(),
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn other_files_are_not_onnx() {
        assert!(!looks_like_onnx(b""));
        assert!(!looks_like_onnx(b"hello, world\n"));
        assert!(!looks_like_onnx(b"\x89PNG\r\n"));
        assert!(!looks_like_onnx(b"{\"json\": 1}"));
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let m = model(&[tensor(&[10, 4], 1, false)]);
        for cut in 0..m.len() {
            // Every truncation either errors or reads a prefix; none panics.
            let _ = initializers(&m[..cut]);
        }
        assert_eq!(
            initializers(&[0x3a, 0xff, 0x01]),
            Err("field length runs past the end of the message".into())
        );
        assert_eq!(initializers(&[0x08; 3]), Err("truncated varint".into()));
        assert_eq!(
            initializers(&[0x0b]),
            Err("unsupported protobuf wire type 3".into())
        );
        let huge = model(&[tensor(&[u64::MAX >> 2, u64::MAX >> 2], 1, true)]);
        assert_eq!(
            initializers(&huge),
            Err("initializer size overflows".into())
        );
        // Deep nesting costs no stack: the reader never descends below TensorProto.
        let mut deep = vec![0x08, 1];
        for _ in 0..10_000 {
            let mut outer = Vec::new();
            len_field(7, &deep, &mut outer);
            deep = outer;
        }
        assert!(initializers(&deep).is_ok());
    }
}
