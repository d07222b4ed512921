//! Spec files: serde types for search spaces and pipelines, read from RON.
//!
//! This module owns reading a RON file into raw serde types with source positions
//! ([`Spanned`]) and turning any failure into a [`Diagnostic`] that points at the input.
//! Validation into resolved types happens once: spaces in [`crate::space::compile`], pipelines
//! in [`pipeline::resolve`]; before that, a pipeline's values that need no other file are
//! checked in `check`, one function per section. No tensors, no graphs here.

pub mod check;
pub mod pipeline;
pub mod space;
mod spanned;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use check::MAX_IMAGE_SIZE;
pub use spanned::{OrderedMap, Span, Spanned};

use crate::error::{Diagnostic, Error, Result};

/// The largest spec file read (pipelines, spaces, libraries): far above any real spec, far
/// below what would strain memory.
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// The text of one spec file and the name the user gave it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as given (relative paths stay relative), used in messages.
    pub name: String,
    /// The path used to open the file and to resolve paths written inside it.
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// Reads a spec file: a regular file (not a device, FIFO or directory, which could
    /// block or never end) of at most [`MAX_SPEC_BYTES`], UTF-8 with an optional byte-order
    /// mark. A missing, unreadable or oversized file is an [`Error::Io`] naming it; invalid
    /// UTF-8 is a [`Diagnostic`] at the line and column of the first bad byte.
    pub fn read(path: &Path) -> Result<Source> {
        let io = |source: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        crate::fsutil::regular_file(path, "a spec")?;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() as u64 > MAX_SPEC_BYTES {
            return Err(io(std::io::Error::other(format!(
                "larger than {} MiB, the most a spec file may hold",
                MAX_SPEC_BYTES >> 20
            ))));
        }
        let text = String::from_utf8(bytes).map_err(|e| invalid_utf8(path, e))?;
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        };
        Ok(Source::from_text(path, text))
    }

    /// A source from text already in memory (tests, fuzzing).
    pub fn from_text(path: &Path, text: String) -> Source {
        Source {
            name: path.display().to_string(),
            path: path.to_path_buf(),
            text,
        }
    }

    /// A diagnostic at `span` of this file.
    pub fn diag(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        let start = floor_char_boundary(&self.text, span.start.min(self.text.len()));
        let end = floor_char_boundary(&self.text, span.end.clamp(start, self.text.len()));
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line = 1 + self.text[..start].matches('\n').count();
        let col = 1 + self.text[line_start..start].chars().count();
        let source_line = self.text[line_start..line_end].trim_end_matches('\r');
        let width = self.text[start..end.min(line_end).max(start)]
            .chars()
            .count();
        Diagnostic {
            file: self.name.clone(),
            line,
            col,
            message: message.into(),
            source_line: (!self.text.is_empty()).then(|| source_line.to_string()),
            width: width.max(1),
            help: None,
        }
    }

    /// Parses the whole file as `T` (the file's spans get id 0). Syntax and type errors
    /// become diagnostics at the place the parser stopped.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        spanned::parse(&self.text, 0).map_err(|e| Error::from(self.diag(e.span, e.message)))
    }
}

/// The spec files read for one command; a [`Span`]'s `file` indexes into it, so a
/// diagnostic can point into whichever file (pipeline, space, included library) is at fault.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<Source>,
}

impl Sources {
    /// Adds a source; returns its id.
    pub fn add(&mut self, source: Source) -> u32 {
        self.files.push(source);
        (self.files.len() - 1) as u32
    }

    /// Reads `path` and parses it as `T`; returns the file id and the value.
    pub fn load<T: serde::de::DeserializeOwned>(&mut self, path: &Path) -> Result<(u32, T)> {
        let id = self.add(Source::read(path)?);
        Ok((id, self.parse(id)?))
    }

    /// Parses the file with id `id` as `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, id: u32) -> Result<T> {
        spanned::parse(&self.files[id as usize].text, id)
            .map_err(|e| Error::from(self.diag(e.span, e.message)))
    }

    /// A diagnostic at `span`, in whichever file it lies.
    pub fn diag(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        match self.files.get(span.file as usize) {
            Some(s) => s.diag(span, message),
            None => Diagnostic {
                file: "<input>".into(),
                line: 1,
                col: 1,
                message: message.into(),
                source_line: None,
                width: 1,
                help: None,
            },
        }
    }

    /// The source a span lies in.
    pub fn get(&self, file: u32) -> &Source {
        &self.files[file as usize]
    }
}

/// The diagnostic for a file that is not UTF-8: the position of the first bad byte, the
/// valid start of its line shown.
fn invalid_utf8(path: &Path, e: std::string::FromUtf8Error) -> Error {
    let at = e.utf8_error().valid_up_to();
    let bytes = e.into_bytes();
    let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
    Diagnostic {
        file: path.display().to_string(),
        line: 1 + valid.matches('\n').count(),
        col: 1 + valid[line_start..].chars().count(),
        message: format!(
            "invalid UTF-8 (byte 0x{:02x}): spec files are UTF-8 text",
            bytes[at]
        ),
        source_line: Some(valid[line_start..].trim_end_matches('\r').to_string()),
        width: 1,
        help: Some("re-save the file as UTF-8".into()),
    }
    .into()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
