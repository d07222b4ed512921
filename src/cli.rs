//! Command-line parsing (clap) and dispatch. Prints results to stdout and errors as
//! `nas-pipe: {error}` to stderr, with the exit codes of [`crate::error::exit`].

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::error::{Error, Result, exit};
use crate::space::genotype::Genotype;
use crate::space::{self, Overrides, Space, show};
use crate::spec::{Sources, Span};

/// Neural architecture search from a declared space to a checked, profiled ONNX model.
#[derive(Debug, Parser)]
#[command(name = "nas-pipe", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where tensors live, overriding the pipeline's `device`: auto, cpu, cuda or cuda:N.
    #[arg(long, global = true, value_name = "DEVICE", value_parser = crate::device::parse)]
    pub device: Option<crate::device::Choice>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline's stages in order (search, derive, retrain, export, validate,
    /// profile, report) in `<out>/<name>/`, skipping every stage that is done.
    ///
    /// A stage is done when the lock file (`nas-pipe.lock`) records it finished under the
    /// cache key the spec gives now (a hash of its resolved spec sections, the keys of the
    /// stages before it, nas-pipe's version and the device) and its outputs and inputs still
    /// have their recorded hashes. Outputs a stage replaces are set aside in `stale/` and
    /// moved back when their key comes back. A run that was killed continues from the last
    /// checkpoint. Exits with 1 when validation misses its tolerances.
    Run {
        /// A pipeline file (`pipelines/*.ron`).
        pipeline: PathBuf,
        /// The folder run folders are written under.
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
        /// Run this stage and every later one, even when done (the earlier ones must be done).
        #[arg(long, value_name = "STAGE", conflicts_with = "only")]
        from: Option<crate::run::Stage>,
        /// Run only this stage, even when done (the stages it reads must be done).
        #[arg(long, value_name = "STAGE")]
        only: Option<crate::run::Stage>,
        /// Run every stage (or every selected one), even when done.
        #[arg(long)]
        force: bool,
        /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
    },
    /// Say which stages of a pipeline's run folder are done, stale or missing, and why.
    Status {
        /// A pipeline file (`pipelines/*.ron`).
        pipeline: PathBuf,
        /// The folder run folders are written under.
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
        /// The ONNX Runtime shared library (its version is part of the validate and profile keys)
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
    },
    /// Rebuild a run's report (`report.html`, `report.md`, `summary.json`) from the
    /// artifacts in its run folder alone.
    Report {
        /// A pipeline file (`pipelines/*.ron`) or a run folder (`exports/<name>`).
        pipeline: PathBuf,
        /// The folder run folders are written under (for a pipeline file).
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
    },
    /// Validate a search space or pipeline file and print the resolved summary: ops, cells,
    /// number of architectures, parameters and multiply-adds of the weight-sharing network
    /// and their range over the discrete architectures.
    Check {
        /// A search space (`schemas/*.ron`) or pipeline (`pipelines/*.ron`) file.
        file: PathBuf,
    },
    /// Print the network skeleton and the cell DAGs of a space (or of a pipeline's space at
    /// its search size), as indented text or Graphviz DOT.
    Show {
        /// A search space or pipeline file.
        file: PathBuf,
        /// Print Graphviz DOT instead of text (render with `dot -Tsvg`).
        #[arg(long)]
        dot: bool,
        /// Show one architecture instead of the whole space: a genotype file, a published
        /// name (DARTS_V1, DARTS_V2), a DARTS `Genotype(normal=[...], ...)` string, or a
        /// NAS-Bench-201 `|op~0|+|op~0|op~1|+...` string.
        #[arg(long, value_name = "G")]
        genotype: Option<String>,
    },
    /// Search the pipeline's space and write the derived genotype.
    ///
    /// DARTS-family: writes `<out>/<name>/search/` (a checkpoint per epoch, `state.json`
    /// with metrics and the op-weight history). Multi-trial (`Trials`): writes
    /// `search/trials.json` (every proposal with its scores) and `search/pareto.json`.
    /// Both write `<out>/<name>/genotype.ron`. A search that was stopped resumes where it
    /// stopped; outputs of a different spec are an error and are left untouched.
    Search {
        /// A pipeline file (`pipelines/*.ron`).
        pipeline: PathBuf,
        /// The folder run folders are written under.
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
        /// Stop after this many epochs (DARTS) or proposals (Trials) in total (resume later
        /// by running again).
        #[arg(long, value_name = "N")]
        stop_after: Option<usize>,
        /// The ONNX Runtime library, for latency objectives (default: search as `nas-pipe
        /// run` does)
        #[arg(long, value_name = "FILE")]
        ort_lib: Option<PathBuf>,
    },
    /// Check a device against the CPU: every CPU kernel, every op at strides 1 and 2, a DARTS
    /// supernet and DARTS_V2 forward and backward on both (max |device − cpu| per output and
    /// gradient), then a DARTS search step and a retraining step timed on both (median after
    /// warm-up). Needs no files. The device is `--device` (default: auto); on the CPU the
    /// kernels are compared with the compositions CUDA runs. Exits with 1 when a parity row
    /// misses its tolerance or fails, or a step fails.
    DeviceCheck {
        /// Write the figures as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Timed runs per step (0: parity only).
        #[arg(long, default_value_t = 5, value_name = "N")]
        repeats: usize,
        /// Untimed runs per step before them.
        #[arg(long, default_value_t = 2, value_name = "N")]
        warmup: usize,
        /// Time the steps on the device only.
        #[arg(long)]
        no_cpu_timing: bool,
    },
    /// Run a multi-trial pipeline with a tabular evaluator over many seeds and print the
    /// returned architecture's scores as mean ± standard deviation: the search signal (the
    /// column the strategy selects on) and the report signal (a column it never saw) in
    /// separate columns. Several pipelines are compared side by side.
    ///
    /// Writes `<out>/<name>/study.json` per pipeline: per seed the returned architecture
    /// (its genotype and NAS-Bench-201 string), its scores and the evaluations spent.
    Study {
        /// Pipeline files with `search: Trials(evaluator: Tabular(...))`.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// Seeds: the pipeline's seed, seed + 1, ...
        #[arg(long, default_value_t = 30, value_name = "N")]
        seeds: u64,
        /// Also draw the pipelines' mean best-so-far curves (report signal against
        /// evaluations) into this SVG file.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// The folder run folders are written under.
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
    },
    /// Train the final network of a genotype from scratch (the pipeline's `retrain`
    /// section), evaluate it on the test set each epoch, and write the weights, metrics,
    /// confusion matrix and model card to `<out>/<name>/retrain/`. A run that was stopped
    /// resumes from its last checkpoint.
    Train {
        pipeline: PathBuf,
        /// The architecture: a genotype file, a published name (DARTS_V1, DARTS_V2), a DARTS
        /// `Genotype(normal=[...], ...)` string or a NAS-Bench-201 string. Default: the
        /// pipeline's `genotype`, else the genotype the search wrote (`<out>/<name>/genotype.ron`)
        #[arg(long, value_name = "G")]
        genotype: Option<String>,
        /// Folder holding the run folders
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
        /// Stop after this many epochs in total (run again to continue)
        #[arg(long, value_name = "N")]
        stop_after: Option<usize>,
    },
    /// Evaluate retrained weights on the pipeline's test set: accuracy, loss, per-class
    /// accuracy and the confusion matrix. The network is rebuilt from the run folder's model
    /// card alone.
    Eval {
        pipeline: PathBuf,
        /// `last.safetensors`, `best.safetensors` (in the retrain folder) or a path
        #[arg(long, default_value = "last.safetensors", value_name = "FILE")]
        weights: String,
        /// Folder holding the run folders
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
    },
    /// Export the retrained network to ONNX (the pipeline's `export` section: opset, BN
    /// folding) as `<out>/<name>/model.onnx`. The network is rebuilt from the run folder's
    /// model card and weights alone; drop path and the auxiliary head are not exported.
    Export {
        pipeline: PathBuf,
        /// `last.safetensors`, `best.safetensors` (in the retrain folder) or a path
        #[arg(long, default_value = "last.safetensors", value_name = "FILE")]
        weights: String,
        /// Folder holding the run folders
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
    },
    /// Compare the exported `<out>/<name>/model.onnx` in ONNX Runtime with the retrained
    /// Candle model (evaluation mode) on the pipeline's `validate.samples` first test
    /// images: largest and mean absolute logit difference, top-1 agreement, both accuracies.
    /// Writes `<out>/<name>/validation.json`; exits with 1 when the pipeline's tolerances
    /// are missed.
    Validate {
        pipeline: PathBuf,
        /// Folder holding the run folders
        #[arg(long, default_value = "exports", value_name = "DIR")]
        out: PathBuf,
        /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
    },
    /// Measure an ONNX model's latency and throughput on ONNX Runtime (CPU) for each batch
    /// size × intra-op thread count, print the table and write `profile.json` and
    /// `profile.md`.
    ///
    /// Given a pipeline (`.ron`), profiles its exported `<out>/<name>/model.onnx` with the
    /// pipeline's `profile` plan (the flags override it), adds the architecture's
    /// parameters and MACs from the model card, and writes into the run folder.
    ///
    /// The input shape is read from the model's first input: its batch (first) dimension
    /// may be dynamic; a fixed one is the only batch size profiled. ONNX Runtime is loaded
    /// from --ort-lib, else ORT_DYLIB_PATH, else the onnxruntime Python package (.venv/,
    /// then python3), else the system library path.
    Profile {
        /// An ONNX model file with one f32 input, or a pipeline file (`.ron`).
        model: PathBuf,
        /// Batch sizes, comma-separated [default: 1,32]
        #[arg(long, value_name = "N,..", value_delimiter = ',')]
        batch_sizes: Option<Vec<usize>>,
        /// Intra-op thread counts, comma-separated [default: 1]
        #[arg(long, value_name = "N,..", value_delimiter = ',')]
        threads: Option<Vec<usize>>,
        /// Untimed runs before the timed ones [default: 20]
        #[arg(long, value_name = "N")]
        warmup: Option<usize>,
        /// Timed runs per batch size and thread count [default: 200]
        #[arg(long, value_name = "N")]
        runs: Option<usize>,
        /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
        #[arg(long, value_name = "PATH")]
        ort_lib: Option<PathBuf>,
        /// Folder for profile.json and profile.md [default: the model's folder]; for a
        /// pipeline, the folder holding the run folders [default: exports]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Runs the binary: parses arguments, dispatches, prints errors. Returns the exit code.
pub fn main() -> i32 {
    tune_runtime();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "nas-pipe: {e}");
            e.exit_code()
        }
    }
}

/// Process settings for fast CPU training; call first thing in `main`, before any thread
/// starts.
///
/// - Raises glibc's mmap and trim thresholds: training allocates and frees many large
///   tensors, and by default each becomes an mmap/munmap pair whose pages are zeroed again
///   (measured 30–50% of a training step here).
/// - Sets `RAYON_NUM_THREADS` to the available parallelism when unset: Candle asks for its
///   thread count at every matmul, and without the variable it re-reads `/proc/cpuinfo`
///   each time on machines without a preferred-CPU list (a few % of a training step).
pub fn tune_runtime() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called before any other thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

/// What kind of spec a file holds, from its leading struct name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Space,
    Pipeline,
}

/// Looks at the first identifier after comments and attributes.
pub fn kind_of(sources: &mut Sources, path: &Path) -> Result<Kind> {
    let src = crate::spec::Source::read(path)?;
    let text = src.text.clone();
    let id = sources.add(src);
    let mut rest = text.as_str();
    loop {
        let t = rest.trim_start();
        if let Some(r) = t.strip_prefix("//") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = t.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r);
        } else if let Some(r) = t.strip_prefix("#![") {
            rest = r.split_once(']').map_or("", |(_, r)| r);
        } else {
            rest = t;
            break;
        }
    }
    let at = text.len() - rest.len();
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    match word.as_str() {
        "SearchSpace" => Ok(Kind::Space),
        "Pipeline" => Ok(Kind::Pipeline),
        _ => Err(sources
            .diag(
                Span {
                    file: id,
                    start: at,
                    end: at + word.len().max(1),
                },
                "expected a search space `SearchSpace(...)` or a pipeline `Pipeline(...)`",
            )
            .into()),
    }
}

fn run(cli: &Cli) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let mut sources = Sources::default();
    match &cli.command {
        Command::Check { file } => {
            let text = match kind_of(&mut sources, file)? {
                Kind::Space => {
                    let space = space::load(&mut sources, file, None, &Overrides::default())?;
                    format!("{}: ok\n{}", file.display(), show::summary(&space))
                }
                Kind::Pipeline => check_pipeline(&mut sources, file)?,
            };
            write_out(&mut out, &text)?;
        }
        Command::Show {
            file,
            dot,
            genotype,
        } => {
            let (space, fixed) = match kind_of(&mut sources, file)? {
                Kind::Space => (
                    space::load(&mut sources, file, None, &Overrides::default())?,
                    None,
                ),
                Kind::Pipeline => {
                    let p = crate::pipeline::resolve::load(&mut sources, file)?;
                    let fixed = p.genotype.map(|(_, r)| (p.retrain_space.clone(), r));
                    (p.search_space, fixed)
                }
            };
            let text = match (genotype, fixed) {
                (Some(g), _) => {
                    let (gsrc, genotype) = Genotype::from_arg(g, &space)?;
                    let arch = genotype.resolve(&gsrc, &space)?;
                    render(&space, Some(&arch), *dot)
                }
                (None, Some((rspace, arch))) => render(&rspace, Some(&arch), *dot),
                (None, None) => render(&space, None, *dot),
            };
            write_out(&mut out, &text)?;
        }
        Command::Run {
            pipeline: file,
            out: dir,
            from,
            only,
            force,
            ort_lib,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let device = device(&sources, &p, cli.device)?;
            let run_dir = dir.join(&p.spec.name.value);
            let opts = crate::pipeline::Options {
                from: *from,
                only: *only,
                force: *force,
                progress: true,
                ort_lib: ort_lib.clone(),
            };
            let o = crate::pipeline::run(&sources, &p, &run_dir, &device, &opts)?;
            write_out(&mut out, &run_summary(&o))?;
            if o.validation_passed == Some(false) {
                return Ok(exit::CHECK_FAILED);
            }
        }
        Command::Status {
            pipeline: file,
            out: dir,
            ort_lib,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let device = device(&sources, &p, cli.device)?;
            let run_dir = dir.join(&p.spec.name.value);
            let r = crate::pipeline::status(&sources, &p, &run_dir, &device, ort_lib.as_deref())?;
            write_out(&mut out, &status_text(&r))?;
        }
        Command::Report {
            pipeline: file,
            out: dir,
        } => {
            let run_dir = if file.is_dir() {
                file.clone()
            } else {
                let p = crate::pipeline::resolve::load(&mut sources, file)?;
                dir.join(&p.spec.name.value)
            };
            if !run_dir.is_dir() {
                return Err(Error::Input(format!(
                    "{} does not exist: run the pipeline first (`nas-pipe run`)",
                    run_dir.display()
                )));
            }
            let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe report")?;
            let w = crate::stages::report::write(&run_dir)?;
            let text = format!(
                "wrote {}, {} and {}\n",
                w.html.display(),
                w.md.display(),
                w.summary.display()
            );
            write_out(&mut out, &text)?;
        }
        Command::Search {
            pipeline: file,
            out: dir,
            stop_after,
            ort_lib,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let device = device(&sources, &p, cli.device)?;
            let run_dir = dir.join(&p.spec.name.value);
            if matches!(
                p.spec.search.as_deref(),
                Some(crate::spec::pipeline::Search::Trials { .. })
            ) {
                let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe search")?;
                let ort: crate::pipeline::Ort =
                    crate::runtime::load(ort_lib.as_deref()).map_err(|e| e.to_string());
                let opts = crate::stages::search::trials::Options {
                    stop_after: *stop_after,
                    progress: true,
                };
                let o = crate::pipeline::trials::trials(&p, &run_dir, &device, &ort, &opts)?;
                let text = if !o.state.finished {
                    format!(
                        "search stopped after {} proposals ({} evaluations of {}); run again to resume from {}\n",
                        o.state.records.len(),
                        o.state.evaluations(),
                        o.state.budget,
                        run_dir.join("search").display()
                    )
                } else {
                    let g = crate::stages::derive::from_trials(&p, &run_dir)?;
                    format!(
                        "search finished: {} evaluations in {:.1}s this run\n{}\ngenotype written to {}\n{}",
                        o.state.evaluations(),
                        o.seconds,
                        crate::stages::search::study::summary(&o.state, &o.front),
                        run_dir.join("genotype.ron").display(),
                        g.to_ron()
                    )
                };
                write_out(&mut out, &text)?;
                return Ok(0);
            }
            let opts = crate::stages::search::darts::Options {
                stop_after: *stop_after,
                progress: true,
                ort: if matches!(
                    p.spec.search.as_deref(),
                    Some(crate::spec::pipeline::Search::Darts {
                        latency: Some(_),
                        ..
                    })
                ) {
                    Some(crate::runtime::load(ort_lib.as_deref())?)
                } else {
                    None
                },
            };
            let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe search")?;
            let outcome = crate::stages::search::darts::run(&p, &run_dir, &device, &opts)?;
            let done = outcome.metrics.len();
            let text = match p.spec.search.as_deref() {
                Some(crate::spec::pipeline::Search::Darts { epochs, .. })
                    if done < epochs.value as usize =>
                {
                    format!(
                        "search stopped after epoch {done} of {}; run again to resume from {}\n",
                        epochs.value,
                        run_dir.join("search").display()
                    )
                }
                _ => {
                    let genotype = crate::stages::derive::from_darts(&p, &run_dir)?;
                    format!(
                        "search finished: {} epochs in {:.1}s this run\ngenotype written to {}\n{}",
                        done,
                        outcome.seconds,
                        run_dir.join("genotype.ron").display(),
                        genotype.to_ron()
                    )
                }
            };
            write_out(&mut out, &text)?;
        }
        Command::DeviceCheck {
            json,
            repeats,
            warmup,
            no_cpu_timing,
        } => {
            let choice = cli.device.unwrap_or(crate::device::Choice::Auto);
            let device = crate::device::select(choice)
                .map_err(|e| Error::Input(format!("--device: {e}")))?;
            let opts = crate::pipeline::device_check::Options {
                repeats: *repeats,
                warmup: *warmup,
                cpu_timing: !no_cpu_timing,
            };
            let report = crate::pipeline::device_check::run(&device, &opts, |l| {
                let _ = writeln!(out, "{l}");
                let _ = out.flush();
            })?;
            if let Some(path) = json {
                crate::pipeline::device_check::write_json(&report, path)?;
            }
            let failed = report.parity.iter().filter(|p| !p.ok).count();
            let untimed = report.timings.iter().filter(|t| t.error.is_some()).count();
            write_out(
                &mut out,
                &format!(
                    "device-check: {} of {} parity rows within tolerance{}, {:.1} s{}\n",
                    report.parity.len() - failed,
                    report.parity.len(),
                    if untimed > 0 {
                        format!(", {untimed} steps failed")
                    } else {
                        String::new()
                    },
                    report.seconds,
                    json.as_ref()
                        .map(|p| format!("; figures in {}", p.display()))
                        .unwrap_or_default()
                ),
            )?;
            if !report.ok {
                return Ok(exit::CHECK_FAILED);
            }
        }
        Command::Study {
            pipelines,
            seeds,
            out: dir,
            plot,
        } => {
            let mut studies = Vec::new();
            for file in pipelines {
                let p = crate::pipeline::resolve::load(&mut sources, file)?;
                let s = crate::stages::search::study::run(&p, *seeds, true)?;
                let path = dir.join(&p.spec.name.value).join("study.json");
                crate::stages::search::study::write(&s, &path)?;
                studies.push((s, path));
            }
            let mut text = crate::stages::search::study::table(&studies);
            if let Some(path) = plot {
                let svg = crate::pipeline::study_plot::curves_svg(&studies)?;
                crate::fsutil::write_atomic(path, svg.as_bytes())?;
                text += &format!("curves: {}\n", path.display());
            }
            write_out(&mut out, &text)?;
        }
        Command::Train {
            pipeline: file,
            genotype,
            out: dir,
            stop_after,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let device = device(&sources, &p, cli.device)?;
            let run_dir = dir.join(&p.spec.name.value);
            let g = crate::stages::retrain::choose_genotype(&p, &run_dir, genotype.as_deref())?;
            let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe train")?;
            let opts = crate::stages::retrain::Options {
                stop_after: *stop_after,
                progress: true,
            };
            let o = crate::stages::retrain::run(&p, &run_dir, &device, &g, &opts)?;
            let text = match &o.evaluation {
                None => format!(
                    "training stopped after epoch {}; run again to resume from {}\n",
                    o.metrics.len(),
                    o.dir.display()
                ),
                Some(e) => format!(
                    "training finished: {} epochs in {:.1}s this run\ntest accuracy {:.2}% (loss {:.4}) on {} images\n{}weights, metrics and model card in {}\n",
                    o.metrics.len(),
                    o.seconds,
                    100.0 * e.accuracy,
                    e.loss,
                    e.images,
                    per_class(e),
                    o.dir.display()
                ),
            };
            write_out(&mut out, &text)?;
        }
        Command::Eval {
            pipeline: file,
            weights,
            out: dir,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let device = device(&sources, &p, cli.device)?;
            let rdir = dir.join(&p.spec.name.value).join("retrain");
            let e = crate::stages::retrain::eval(&p, &rdir, weights, &device, true)?;
            let text = format!(
                "{}: test accuracy {:.2}% (loss {:.4}) on {} images\n{}",
                e.weights,
                100.0 * e.accuracy,
                e.loss,
                e.images,
                per_class(&e)
            );
            write_out(&mut out, &text)?;
        }
        Command::Export {
            pipeline: file,
            weights,
            out: dir,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let run_dir = dir.join(&p.spec.name.value);
            let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe export")?;
            let (path, opts, bytes) = crate::stages::export::run(&p, &run_dir, weights)?;
            let text = format!(
                "wrote {} ({} bytes, opset {}, BN {})\n",
                path.display(),
                bytes,
                opts.opset,
                if opts.fold_batch_norm {
                    "folded"
                } else {
                    "as nodes"
                }
            );
            write_out(&mut out, &text)?;
        }
        Command::Validate {
            pipeline: file,
            out: dir,
            ort_lib,
        } => {
            let p = crate::pipeline::resolve::load(&mut sources, file)?;
            let device = device(&sources, &p, cli.device)?;
            let run_dir = dir.join(&p.spec.name.value);
            let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe validate")?;
            let v = crate::stages::validate::run(&p, &run_dir, &device, ort_lib.as_deref())?;
            let text = format!(
                "{}: {} on {} test images (ONNX Runtime {} against Candle)\n  \
                 max abs logit diff {:.3e} (allowed {:.1e}), mean {:.3e}\n  \
                 top-1 agreement {:.2}% (required {:.2}%)\n  \
                 accuracy: ONNX Runtime {:.2}%, Candle {:.2}%\nwritten to {}\n",
                v.model,
                if v.passed { "passed" } else { "FAILED" },
                v.samples,
                v.ort_version,
                v.max_abs_diff,
                v.max_abs_diff_allowed,
                v.mean_abs_diff,
                100.0 * v.top1_agreement,
                100.0 * v.min_top1_agreement,
                100.0 * v.ort_accuracy,
                100.0 * v.candle_accuracy,
                run_dir.join("validation.json").display()
            );
            write_out(&mut out, &text)?;
            if !v.passed {
                return Ok(exit::CHECK_FAILED);
            }
        }
        Command::Profile {
            model,
            batch_sizes,
            threads,
            warmup,
            runs,
            ort_lib,
            out: dir,
        } => {
            // A pipeline profiles its exported model with its own plan, into its run folder.
            let is_pipeline = model.extension().is_some_and(|e| e == "ron");
            let report = if is_pipeline {
                let p = crate::pipeline::resolve::load(&mut sources, model)?;
                let run_dir = dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("exports"))
                    .join(&p.spec.name.value);
                let plan = crate::stages::profile::plan_of(&p).with_overrides(
                    batch_sizes.as_deref(),
                    threads.as_deref(),
                    *warmup,
                    *runs,
                )?;
                let onnx = run_dir.join("model.onnx");
                if !onnx.exists() {
                    return Err(Error::Input(format!(
                        "{} does not exist: run `nas-pipe export` first",
                        onnx.display()
                    )));
                }
                // The file is checked before the library is looked for.
                crate::runtime::model_file::read(&onnx)?;
                let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe profile")?;
                let rt = crate::runtime::load(ort_lib.as_deref())?;
                let report = crate::stages::profile::run_folder(&run_dir, &plan, rt)?;
                (report, run_dir)
            } else {
                let d = match dir {
                    Some(d) => d.clone(),
                    None => model
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                };
                let plan = crate::run::profile::Plan::default().with_overrides(
                    batch_sizes.as_deref(),
                    threads.as_deref(),
                    *warmup,
                    *runs,
                )?;
                crate::runtime::model_file::read(model)?;
                let rt = crate::runtime::load(ort_lib.as_deref())?;
                let report = crate::stages::profile::run(
                    rt,
                    model,
                    &plan,
                    crate::stages::profile::Known::default(),
                    |_| {},
                )?;
                crate::stages::profile::write(&report, &d)?;
                (report, d)
            };
            let (report, dir) = report;
            let text = format!(
                "{}\nwritten to {} and {}\n",
                crate::stages::profile::markdown(&report),
                dir.join("profile.json").display(),
                dir.join("profile.md").display()
            );
            write_out(&mut out, &text)?;
        }
    }
    Ok(exit::OK)
}

/// What `nas-pipe run` did, a line per stage, and where the results are.
fn run_summary(o: &crate::pipeline::Outcome) -> String {
    use crate::pipeline::Action;
    let mut t = format!("{}:\n", o.run_dir.display());
    for (stage, action) in &o.stages {
        let what = match action {
            Action::Cached => "cached".to_string(),
            Action::Restored(from) => format!("restored from {}", from.display()),
            Action::Ran(s) => format!("ran in {s:.1}s"),
            Action::Skipped => "not selected".to_string(),
        };
        t += &format!("  {:<9} {what}\n", stage.name());
    }
    for d in &o.set_aside {
        t += &format!("previous outputs set aside in {}\n", d.display());
    }
    match o.validation_passed {
        Some(true) => t += "validation passed\n",
        Some(false) => {
            t += &format!(
                "validation FAILED: see {}\n",
                o.run_dir.join("validation.json").display()
            )
        }
        None => {}
    }
    let summary = std::fs::read(o.run_dir.join(crate::stages::report::SUMMARY))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::stages::report::Summary>(&b).ok());
    if let Some(h) = summary.map(|s| s.headline) {
        let mut facts = Vec::new();
        if let Some(a) = h.test_accuracy {
            facts.push(format!("test accuracy {:.2}%", 100.0 * a));
        }
        if let Some(l) = h.latency_p50_ms_batch1 {
            facts.push(format!("batch-1 p50 latency {l:.3} ms"));
        }
        if let Some(n) = h.params {
            facts.push(format!("{} params", show::thousands(n)));
        }
        if let Some(n) = h.macs {
            facts.push(format!("{} MACs per image", show::thousands(n)));
        }
        if !facts.is_empty() {
            t += &format!("{}\n", facts.join(", "));
        }
    }
    let report = o.run_dir.join(crate::stages::report::HTML);
    if report.exists() {
        t += &format!("report: {}\n", report.display());
    }
    t
}

/// `nas-pipe status` as a table.
fn status_text(r: &crate::pipeline::Report) -> String {
    let mut t = format!("{}\n", r.run_dir.display());
    if let Some(h) = &r.holder {
        t += &format!("in use by {h}\n");
    }
    t += &format!(
        "  {:<9} {:<8} {:<12} {:<20} {:>9}  {}\n",
        "stage", "state", "key", "finished", "seconds", "why"
    );
    for s in &r.stages {
        let (key, finished, seconds) = match &s.entry {
            Some(e) => (
                e.key.chars().take(12).collect::<String>(),
                e.finished.clone().unwrap_or_else(|| "-".into()),
                if e.finished.is_some() {
                    format!("{:.1}", e.seconds)
                } else {
                    "-".into()
                },
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        t += &format!(
            "  {:<9} {:<8} {:<12} {:<20} {:>9}  {}\n",
            s.stage.name(),
            s.state.word(),
            key,
            finished,
            seconds,
            s.state.why()
        );
    }
    if !r.stale.is_empty() {
        let total: u64 = r.stale.iter().map(|(_, b)| b).sum();
        t += &format!(
            "{} set aside in {} ({} bytes; moved back when their key returns, safe to delete):\n",
            r.stale.len(),
            r.run_dir.join(crate::run::STALE_DIR).display(),
            show::thousands(total)
        );
        for (name, bytes) in &r.stale {
            t += &format!("  {name} ({} bytes)\n", show::thousands(*bytes));
        }
    }
    t
}

/// Per-class accuracy, one line each.
fn per_class(e: &crate::nets::train::Evaluation) -> String {
    e.classes
        .iter()
        .zip(&e.per_class_accuracy)
        .map(|(c, a)| format!("  {c:<14} {:6.2}%\n", 100.0 * a))
        .collect()
}

/// The device a pipeline runs on: `--device` when given, else the pipeline's `device`.
/// An unusable choice is an error at the flag or at the pipeline's `device` line.
pub fn device(
    sources: &Sources,
    p: &crate::run::Resolved,
    flag: Option<crate::device::Choice>,
) -> Result<candle_core::Device> {
    match flag {
        Some(choice) => {
            crate::device::select(choice).map_err(|e| Error::Input(format!("--device: {e}")))
        }
        None => crate::device::select(p.spec.device.value).map_err(|e| {
            sources
                .diag(p.spec.device.span, e)
                .with_help("`--device cpu` runs it on the CPU without editing the file")
                .into()
        }),
    }
}

fn render(space: &Space, arch: Option<&crate::space::genotype::Architecture>, dot: bool) -> String {
    match (arch, dot) {
        (_, true) => show::dot(space, arch),
        (Some(a), false) => show::text_arch(space, a),
        (None, false) => show::text(space),
    }
}

fn write_out(out: &mut impl std::io::Write, text: &str) -> Result<()> {
    match out.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io {
            path: PathBuf::from("<stdout>"),
            source: e,
        }),
        Ok(()) => Ok(()),
    }
}

fn check_pipeline(sources: &mut Sources, file: &Path) -> Result<String> {
    let p = crate::pipeline::resolve::load(sources, file)?;
    let resolved = p.spec.to_ron();
    let mut o = format!("{}: ok\n\nresolved spec:\n{resolved}\n\n", file.display());
    o += &format!("space file: {}\n\n", p.space_path.display());
    if p.spec.search.is_some() {
        o += "search network\n";
        o += &show::summary(&p.search_space);
        o += "\n";
    }
    o += "retrained network\n";
    o += &show::summary(&p.retrain_space);
    if let Some((_, arch)) = &p.genotype {
        let c = p.retrain_space.discrete_cost(arch);
        o += &format!(
            "\nfixed genotype: {} params, {} MACs\n",
            show::thousands(c.params),
            show::thousands(c.macs)
        );
    }
    Ok(o)
}
