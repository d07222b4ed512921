//! The library's error type and the exit-code table.
//!
//! Every error a user can cause by what they wrote is a [`Diagnostic`]: it names the file,
//! the line and column, shows the source line with a caret under the offending text, and
//! says what was expected. Errors that are not about a position in a file (a missing file,
//! a failed write) carry the path they concern.

use std::fmt;
use std::path::PathBuf;

/// Exit codes of the `nas-pipe` binary. Fixed: scripts depend on them.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A check ran and failed (for example a validation tolerance was missed).
    pub const CHECK_FAILED: i32 = 1;
    /// Bad input or a runtime error.
    pub const ERROR: i32 = 2;
}

/// A message about a position in a source file, rendered like a compiler error:
///
/// ```text
/// schemas/bad.ron:12:19: unknown op "sep_conv_9x9" in cell "normal"
///    |
/// 12 |     candidates: ["sep_conv_9x9"],
///    |                  ^^^^^^^^^^^^^^
///    = help: known ops: none, max_pool_3x3, ...
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong.
    pub message: String,
    /// The source line the position is on (without its line break), if the file has one.
    pub source_line: Option<String>,
    /// How many characters the caret underlines (at least 1).
    pub width: usize,
    /// An optional hint printed after the source excerpt.
    pub help: Option<String>,
}

impl Diagnostic {
    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        let gutter = self.line.to_string().len();
        if let Some(src) = &self.source_line {
            let src = src.replace('\t', " ");
            writeln!(f)?;
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, src)?;
            write!(
                f,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(self.col.saturating_sub(1)),
                "^".repeat(self.width.max(1))
            )?;
        }
        if let Some(help) = &self.help {
            writeln!(f)?;
            write!(f, "{:gutter$} = help: {}", "", help)?;
        }
        Ok(())
    }
}

/// The library's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something in an input file is wrong; points at the place.
    #[error("{0}")]
    Spec(Box<Diagnostic>),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input that is not a file position is wrong (a command-line value, say).
    #[error("{0}")]
    Input(String),
    /// A data file is missing, malformed or does not match what its format declares.
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// A network could not be lowered to ONNX.
    #[error("ONNX export: {0}")]
    Export(String),
    /// ONNX Runtime is missing, too old, or failed to load or run a model.
    #[error("{0}")]
    Runtime(String),
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Spec(Box::new(d))
    }
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        exit::ERROR
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Candle error's message without the backtrace Candle may attach to it.
pub fn candle_message(e: &candle_core::Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().trim().to_string()
}
