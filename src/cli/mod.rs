//! Command-line parsing (clap) and dispatch, one file per command. Prints results to stdout
//! and errors as `nas-pipe: {error}` to stderr, with the exit codes of [`crate::error::exit`].
//!
//! Each command's file holds its clap [`Args`](clap::Args) (whose doc comment is its help)
//! and a `run` that returns the exit code; [`common`] holds what several commands share.

use clap::{Parser, Subcommand};

use crate::error::Result;

pub mod check;
pub mod common;
pub mod completions;
pub mod device_check;
pub mod eval;
pub mod export;
pub mod launch;
pub mod man;
pub mod predict;
pub mod profile;
pub mod report;
pub mod run;
pub mod search;
pub mod show;
pub mod status;
pub mod study;
pub mod train;
pub mod validate;
pub mod worker;

pub use common::{Kind, device, kind_of};

/// Neural architecture search from a declared space to a checked, profiled ONNX model.
#[derive(Debug, Parser)]
#[command(name = "nas-pipe", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where tensors live, overriding the pipeline's `device`: auto, cpu, cuda or cuda:N.
    #[arg(long, global = true, value_name = "DEVICE", value_parser = crate::device::parse)]
    pub device: Option<crate::device::Choice>,
    /// Print no progress on stderr (bars, progress lines, stage and epoch lines); results
    /// and errors still print.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// When stderr is not a terminal (a log file, CI), print a progress line this often.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = crate::progress::DEFAULT_EVERY_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub log_every: u64,
    /// Print progress, stage news, notes and errors on stderr as JSON lines (one object per
    /// line, with an `event` field), for machines; no progress bar is drawn.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands, in the order `nas-pipe --help` lists them; each one's help is the doc
/// comment of its `Args`.
#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::Args),
    Status(status::Args),
    Report(report::Args),
    Check(check::Args),
    Show(show::Args),
    Search(search::Args),
    Worker(worker::Args),
    Launch(launch::Args),
    DeviceCheck(device_check::Args),
    Study(study::Args),
    Train(train::Args),
    Eval(eval::Args),
    Export(export::Args),
    Validate(validate::Args),
    Profile(profile::Args),
    Predict(predict::Args),
    Completions(completions::Args),
    Man(man::Args),
}

impl Command {
    /// The pipeline file the command was given, which advice in its errors names.
    fn pipeline(&self) -> Option<&std::path::Path> {
        let file = match self {
            Command::Run(a) => &a.pipeline,
            Command::Status(a) => &a.pipeline,
            Command::Search(a) => &a.pipeline,
            Command::Train(a) => &a.pipeline,
            Command::Eval(a) => &a.pipeline,
            Command::Export(a) => &a.pipeline,
            Command::Validate(a) => &a.pipeline,
            Command::Check(a) => &a.file,
            Command::Report(a) if a.pipeline.is_file() => &a.pipeline,
            _ => return None,
        };
        Some(file)
    }
}

/// Runs the binary: parses arguments, dispatches, prints errors. Returns the exit code.
pub fn main() -> i32 {
    tune_runtime();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--json` holds for the error about the command line too.
            let json = std::env::args_os().any(|a| a == "--json");
            crate::progress::configure(false, std::time::Duration::from_secs(1), json);
            return usage_error(&e);
        }
    };
    crate::progress::configure(
        cli.quiet,
        std::time::Duration::from_secs(cli.log_every),
        cli.json,
    );
    match on_pool(|| dispatch(&cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = match cli.command.pipeline() {
                Some(file) => crate::run::with_pipeline(&e.to_string(), file),
                None => e.to_string(),
            };
            crate::progress::error(&message, e.exit_code());
            e.exit_code()
        }
    }
}

/// Prints what clap says about the command line: help and version to stdout (exit 0), an
/// error in nas-pipe's own style (`nas-pipe: …`, exit 2).
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return e.exit_code();
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    crate::progress::error(text, crate::error::exit::ERROR);
    crate::error::exit::ERROR
}

/// Runs the parsed command; returns its exit code.
fn dispatch(cli: &Cli) -> Result<i32> {
    let device = cli.device;
    match &cli.command {
        Command::Run(a) => run::run(a, device),
        Command::Status(a) => status::run(a, device),
        Command::Report(a) => report::run(a),
        Command::Check(a) => check::run(a),
        Command::Show(a) => show::run(a),
        Command::Search(a) => search::run(a, device),
        Command::Worker(a) => worker::run(a, device, cli.quiet),
        Command::Launch(a) => launch::run(a),
        Command::DeviceCheck(a) => device_check::run(a, device),
        Command::Study(a) => study::run(a),
        Command::Train(a) => train::run(a, device),
        Command::Eval(a) => eval::run(a, device),
        Command::Export(a) => export::run(a),
        Command::Validate(a) => validate::run(a, device),
        Command::Profile(a) => profile::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    }
}

/// Process settings for fast CPU training; call first thing in `main`, before any thread
/// starts.
///
/// - Raises glibc's mmap and trim thresholds: training allocates and frees many large
///   tensors, and by default each becomes an mmap/munmap pair whose pages are zeroed again
///   (measured 30–50% of a training step here).
/// - Keeps 64 MiB of padding at the top of each heap: rayon's threads allocate in their own
///   arenas, whose heaps otherwise shrink and grow again step after step, each time faulting
///   the pages in anew. A DARTS_V2 retraining step took a third of the page faults and half
///   the system time with it (`speed --row darts_v2_train_b64 --runs 15`: 0.70–0.79 M minor
///   faults → 0.24 M, 2.2 → 1.1 s of system time, the peak unchanged).
/// - Sets `RAYON_NUM_THREADS` to the available parallelism when unset: Candle asks for its
///   thread count at every matmul, and without the variable it re-reads `/proc/cpuinfo`
///   each time on machines without a preferred-CPU list (a few % of a training step).
/// - Sets `CANDLE_NUM_THREADS` to 1 when unset: Candle's element-wise ops then run on the
///   calling thread instead of a second pool of workers beside rayon's (where this crate's
///   kernels and the matrix products run). Two pools on the same cores hand every op over
///   through spinning or sleeping workers: with Candle's pool a DARTS_V2 retraining step on 2
///   cores took 0.51–0.62 s, without it 0.49–0.52 s and a fifth less CPU time
///   (`speed --row darts_v2_train_b64`, side by side, a loaded machine).
///
/// Also builds rayon's global pool (threads with the main thread's 8 MiB stack), on which
/// [`on_pool`] runs the command.
pub fn tune_runtime() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called before any other thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called before any other thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    // Fails only when the pool already exists (a second call): then it is kept as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(POOL_STACK)
        .build_global();
}

/// The stack of rayon's pool threads: the main thread's default on Linux, since commands run
/// on the pool ([`on_pool`]).
const POOL_STACK: usize = 8 << 20;

/// Runs `f` on a thread of rayon's global pool and returns what it returns.
///
/// The matrix products and this crate's kernels split their work over that pool. Called
/// from outside it, every parallel op is handed to the pool while the caller sleeps until it
/// is done, and the caller's own serial work (Candle's element-wise ops) competes for the
/// cores with pool threads that are still spinning for work: three busy threads on two
/// cores. Called from inside, the caller is one of the pool's threads and does its share.
/// On 2 cores the search steps took 11–21% less time this way and the retraining step 6–10%
/// (docs/speed.md).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_pool_runs_on_a_thread_of_the_global_pool() {
        assert_eq!(rayon::current_thread_index(), None);
        let (index, value) = on_pool(|| (rayon::current_thread_index(), 7));
        assert!(index.is_some(), "the closure ran off the pool");
        assert_eq!(value, 7);
        // From a pool thread it runs in place.
        let nested = on_pool(|| {
            let outer = rayon::current_thread_index();
            on_pool(|| rayon::current_thread_index() == outer)
        });
        assert!(nested);
    }
}
