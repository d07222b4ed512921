//! Helpers shared by the test areas: paths, the binary, golden files, temp folders,
//! loading spaces and genotypes, running commands, ONNX Runtime, editing exported models.

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_pipe::space::genotype::Genotype;
use nas_pipe::space::{self, Overrides, Space};
use nas_pipe::spec::{Source, Sources, Span};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nas-pipe"));
    c.current_dir(root());
    // The same memory budget on every machine: `check` prints it, and refusals depend on it.
    c.env("NAS_PIPE_MEMORY_MIB", "24576");
    c
}

pub fn bless() -> bool {
    std::env::var_os("NAS_PIPE_BLESS").is_some()
}

/// Compares `actual` with the golden file (or rewrites it when blessing).
pub fn golden(path: &Path, actual: &str) {
    if bless() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with NAS_PIPE_BLESS=1",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

pub fn load_space(path: &str, ov: Overrides) -> Space {
    let mut sources = Sources::default();
    space::load(&mut sources, &root().join(path), None, &ov).unwrap()
}

pub fn with_size(channels: u32, layers: u32) -> Overrides {
    Overrides {
        input: None,
        channels: Some((channels, Span::default())),
        layers: Some((layers, Span::default())),
    }
}

pub fn arch(space: &Space, g: &str) -> nas_pipe::space::genotype::Architecture {
    let (src, genotype) = Genotype::from_arg(g, space).unwrap();
    genotype.resolve(&src, space).unwrap()
}

pub const NB201_EXAMPLE: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";

/// A fresh, empty folder for one test under the system's temp folder
/// (`nas-pipe-test-<name>-<random>`), removed with its contents when dropped, unless the test
/// is failing: then it stays, and its path is printed, to be looked at.
pub fn tempdir(name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("nas-pipe-test-{name}-"))
        .tempdir()
        .unwrap();
    Scratch(dir)
}

/// A folder for a fixture that tests of one run share (built once per test binary, kept after
/// it, for static fixtures are never dropped): `target/tmp/<name>`, emptied first.
pub fn fixture_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A test's folder from [`tempdir`]; derefs to its path.
pub struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!("kept the failing test's folder {}", self.0.path().display());
        }
    }
}

/// A small deterministic generator (xorshift), so failures reproduce from the case number.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub fn chain_genotype(s: &Space, layers: &[&str]) -> nas_pipe::space::genotype::Architecture {
    let g = Genotype {
        version: nas_pipe::spec::Spanned::unspanned(1),
        space: s.name.clone(),
        cells: Default::default(),
        layers: nas_pipe::spec::Spanned::unspanned(
            layers
                .iter()
                .map(|l| nas_pipe::spec::Spanned::unspanned(l.to_string()))
                .collect(),
        ),
    };
    let src = Source::from_text(Path::new("g"), String::new());
    g.resolve(&src, s).unwrap()
}

/// A small retraining pipeline on synthetic data (DARTS space, C = 2, 3 cells).
pub fn train_pipeline(dir: &Path, name: &str, size: u32, retrain_extra: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 5,
    device: Cpu,
    data: Synthetic(channels: 3, size: {size}, classes: 4, train: 40, test: 24),
    space: "{}",
    retrain: Retrain(
        channels: 2, layers: 3, epochs: 3, batch_size: 16,
        optimizer: Sgd(lr: 0.1, lr_min: 0.0, weight_decay: 3e-4, grad_clip: 5.0, warmup_epochs: 1),
        augment: (crop_padding: 1, flip: true, cutout: 2),
        {retrain_extra}
    ),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join(format!("{name}.ron"));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `c`, which must fail as bad input (exit code 2); returns its stderr.
pub fn fails(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The ONNX Runtime library the search finds (ORT_DYLIB_PATH, .venv/, python3, system), or
/// `None` with a note on stderr that the calling test is skipped. A library named by
/// ORT_DYLIB_PATH must load.
pub fn ort_runtime(test: &str) -> Option<&'static nas_pipe::runtime::Runtime> {
    match nas_pipe::runtime::load(None) {
        Ok(rt) => Some(rt),
        Err(e) if std::env::var_os("ORT_DYLIB_PATH").is_some() => {
            panic!("ORT_DYLIB_PATH is set but ONNX Runtime does not load: {e}")
        }
        Err(e) => {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no ONNX Runtime library; bash scripts/test.sh installs one.\n{e}"
            );
            None
        }
    }
}

/// `model` with its graph changed by `edit` (the model is ours, so the `protobuf` crate may
/// parse it).
pub fn with_graph(model: &[u8], edit: impl FnOnce(&mut onnx_protobuf::GraphProto)) -> Vec<u8> {
    let mut m: onnx_protobuf::ModelProto = protobuf::Message::parse_from_bytes(model).unwrap();
    edit(m.graph.mut_or_insert_default());
    protobuf::Message::write_to_bytes(&m).unwrap()
}

/// The tensor type of a graph input.
pub fn tensor_type(
    v: &mut onnx_protobuf::ValueInfoProto,
) -> &mut onnx_protobuf::type_proto::Tensor {
    match &mut v.type_.mut_or_insert_default().value {
        Some(onnx_protobuf::type_proto::Value::TensorType(t)) => t,
        other => panic!("{} is not a tensor: {other:?}", v.name),
    }
}
