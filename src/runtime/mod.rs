//! ONNX Runtime: finding and loading its shared library, and running models on it. The
//! only module that uses the `ort` crate.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`), once per process, from the
//! first place in the search order of [`locate`] that holds a loadable library of version
//! 1.[`locate::MIN_MINOR`] or newer. Every failure is an [`Error::Runtime`] that lists what
//! was tried and how to install the library; nothing here panics on a missing library.
//!
//! Models are parsed by ONNX Runtime only; [`model_file`] reads the initializer sizes
//! without a protobuf library. [`Session::refuses_images`] is the one check that a model's
//! declared input takes a batch of images of a given size, before any is fed.

pub mod locate;
pub mod measure;
pub mod model_file;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::{Error, Result};
pub use locate::{INSTALL_HINT, Source};
pub use model_file::not_onnx;

/// The execution provider sessions run on: nas-pipe registers no other, so ONNX Runtime
/// places every node on its default CPU provider.
pub const EXECUTION_PROVIDER: &str = "CPUExecutionProvider";

/// The loaded ONNX Runtime library and its environment.
#[derive(Debug)]
pub struct Runtime {
    /// The version string the library reports (`1.32.0`).
    pub version: String,
    /// The library file, or the bare name the dynamic loader resolved.
    pub path: PathBuf,
    /// Where the search found it.
    pub source: Source,
    env: ort::environment::Environment,
}

static LOADED: OnceLock<Runtime> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (once per process) and returns it.
///
/// `explicit` is the `--ort-lib` path. The first successful load serves the rest of the
/// process: asking later for a different explicit library is an error, since a process
/// cannot hold two.
pub fn load(explicit: Option<&Path>) -> Result<&'static Runtime> {
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    let search = locate::Search::from_process(explicit);
    if let Some(rt) = LOADED.get() {
        if let Some(want) = &search.flag
            && !locate::explicit_library(want).is_some_and(|lib| same_file(&lib, &rt.path))
        {
            return Err(Error::Runtime(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
                rt.path.display(),
                want.display()
            )));
        }
        return Ok(rt);
    }
    let found = locate::first_loadable(&search, locate::python_package, |path| {
        let version = locate::probe_version(path)?;
        locate::check_version(&version)?;
        // `init_from` loads the library for the rest of the process (its own version check
        // repeats ours).
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        Ok((version, builder))
    })
    .map_err(|attempts| Error::Runtime(locate::not_found_message(&attempts)))?;
    let (version, builder) = found.value;
    let env = builder
        .with_name("nas-pipe")
        .with_telemetry(false)
        .build()
        .map_err(|e| {
            Error::Runtime(format!(
                "ONNX Runtime {version} from {}: cannot create its environment: {e}",
                found.path.display()
            ))
        })?;
    Ok(LOADED.get_or_init(|| Runtime {
        version,
        path: found.path,
        source: found.source,
        env,
    }))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The model's input: name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    /// Whether the elements are `f32` (the only type [`Session::run`] feeds).
    pub is_f32: bool,
    /// The element type as ONNX Runtime names it, for messages.
    pub element_type: String,
    /// Dimensions; `None` for a dynamic (symbolic) one.
    pub shape: Vec<Option<usize>>,
}

/// A shape as text: `[batch, 3, 32, 32]`, `batch` for a dynamic first dimension and `?`
/// for another dynamic one.
pub fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .enumerate()
        .map(|(i, d)| match (i, d) {
            (_, Some(d)) => d.to_string(),
            (0, None) => "batch".into(),
            (_, None) => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// A model's output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Row-major values.
    pub data: Vec<f32>,
    /// Dimensions (`[batch, classes]` for a classifier).
    pub shape: Vec<usize>,
}

/// An ONNX Runtime inference session on one model, with a fixed intra-op thread count.
pub struct Session {
    inner: ort::session::Session,
    runtime: &'static Runtime,
    inputs: Vec<Input>,
    threads: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("inputs", &self.inputs)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens an ONNX model file. A missing file is an [`Error::Io`]; a file that is not an
    /// ONNX model, or one ONNX Runtime rejects, an [`Error::Data`] naming it.
    /// `threads` ≥ 1 is the intra-op thread count.
    pub fn from_file(rt: &'static Runtime, path: &Path, threads: usize) -> Result<Session> {
        let head = read_head(path)?;
        if !model_file::looks_like_onnx(&head) {
            return Err(not_onnx(path, model_file::NOT_PROTOBUF));
        }
        let inner = builder(rt, threads)?
            .commit_from_file(path)
            .map_err(|e| not_onnx(path, &format!("ONNX Runtime: {e}")))?;
        Session::new(rt, inner, threads)
    }

    /// Opens an ONNX model held in memory (external data files are not reachable from
    /// bytes). Errors are [`Error::Data`] under the name `<memory>`.
    pub fn from_bytes(rt: &'static Runtime, bytes: &[u8], threads: usize) -> Result<Session> {
        let path = Path::new("<memory>");
        if !model_file::looks_like_onnx(bytes) {
            return Err(not_onnx(path, model_file::NOT_PROTOBUF));
        }
        let inner = builder(rt, threads)?
            .commit_from_memory(bytes)
            .map_err(|e| not_onnx(path, &format!("ONNX Runtime: {e}")))?;
        Session::new(rt, inner, threads)
    }

    fn new(rt: &'static Runtime, inner: ort::session::Session, threads: usize) -> Result<Self> {
        let inputs = inner
            .inputs()
            .iter()
            .map(|o| match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => Input {
                    name: o.name().to_string(),
                    is_f32: *ty == TensorElementType::Float32,
                    element_type: format!("{ty:?}"),
                    shape: shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
                },
                other => Input {
                    name: o.name().to_string(),
                    is_f32: false,
                    element_type: format!("{other:?}"),
                    shape: Vec::new(),
                },
            })
            .collect();
        Ok(Session {
            inner,
            runtime: rt,
            inputs,
            threads,
        })
    }

    /// The model's inputs, in order.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// The batch size the graph's first input fixes: its first dimension when that is a
    /// number ≥ 1, `None` when it is dynamic (or the graph has no such input).
    pub fn fixed_batch(&self) -> Option<usize> {
        let first = *self.inputs.first()?.shape.first()?;
        first.filter(|&b| b >= 1)
    }

    /// Why the model cannot take NCHW batches of f32 images of `chw` = [C, H, W], or `None`
    /// when it can: it must have exactly one input, of f32, of rank 4, whose channels,
    /// height and width equal `chw` where the graph fixes them (a dynamic one takes any).
    pub fn refuses_images(&self, chw: [usize; 3]) -> Option<String> {
        let [input] = &self.inputs[..] else {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            return Some(format!(
                "the graph has {} inputs ({}), not one",
                self.inputs.len(),
                names.join(", ")
            ));
        };
        let fits = input.shape.len() == 4
            && input.shape[1..]
                .iter()
                .zip(chw)
                .all(|(d, want)| d.is_none_or(|d| d == want));
        if !input.is_f32 {
            Some(format!(
                "the graph's input {:?} holds {}, not f32",
                input.name, input.element_type
            ))
        } else if !fits {
            Some(format!(
                "the graph's input {:?} is {}, not [batch, {}, {}, {}]",
                input.name,
                shape_text(&input.shape),
                chw[0],
                chw[1],
                chw[2]
            ))
        } else {
            None
        }
    }

    /// The model's custom metadata value under `key` (`metadata_props`), if any.
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.inner.metadata().ok()?.custom(key)
    }

    /// The intra-op thread count the session was built with.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The ONNX Runtime version string (`1.32.0`).
    pub fn ort_version(&self) -> &str {
        &self.runtime.version
    }

    /// The execution provider the session runs on.
    pub fn execution_provider(&self) -> &'static str {
        EXECUTION_PROVIDER
    }

    /// Runs the model on one `f32` batch fed to its first (only) input and returns its
    /// first output as `f32`.
    ///
    /// # Shapes
    /// `input` holds `shape.iter().product()` values in row-major order; for an image
    /// classifier `shape` is NCHW `[batch, channels, height, width]` and the result
    /// `[batch, classes]`.
    pub fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Logits> {
        if self.inputs.len() != 1 {
            return Err(Error::Runtime(format!(
                "the model has {} inputs; nas-pipe feeds exactly one",
                self.inputs.len()
            )));
        }
        if input.len() != shape.iter().product::<usize>() {
            return Err(Error::Runtime(format!(
                "input of {} values does not fill shape {shape:?}",
                input.len()
            )));
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let tensor = TensorRef::from_array_view((dims, input))
            .map_err(|e| Error::Runtime(format!("cannot wrap the input batch: {e}")))?;
        let outputs = self
            .inner
            .run(ort::inputs![tensor])
            .map_err(|e| Error::Runtime(format!("ONNX Runtime run failed: {e}")))?;
        if outputs.len() == 0 {
            return Err(Error::Runtime("the model has no outputs".into()));
        }
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Runtime(format!("the first output is not an f32 tensor: {e}")))?;
        Ok(Logits {
            data: data.to_vec(),
            shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
        })
    }
}

fn builder(rt: &Runtime, threads: usize) -> Result<ort::session::builder::SessionBuilder> {
    let fail = |e: ort::Error<_>| Error::Runtime(format!("ONNX Runtime session options: {e}"));
    ort::session::Session::builder(&rt.env)
        .map_err(|e| Error::Runtime(format!("ONNX Runtime session options: {e}")))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(fail)?
        .with_intra_threads(threads.max(1))
        .map_err(fail)
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::fsutil::regular_file(path, "a model")?;
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .map_err(io)?
        .take(16)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok(head)
}
