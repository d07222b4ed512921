//! `nas-pipe device-check`: compares a device's kernels, ops, networks and training steps
//! with the CPU's and times the steps.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::common::write_out;
use crate::error::{Error, Result, exit};
use crate::pipeline::device_check::{self, Report};

/// Check a device against the CPU: every CPU kernel, every op at strides 1 and 2, a DARTS
/// supernet and DARTS_V2 forward and backward on both (max |device − cpu| per output and
/// gradient), then a DARTS search step and a retraining step timed on both (median after
/// warm-up). Needs no files. The device is `--device` (default: auto); on the CPU the
/// kernels are compared with the compositions CUDA runs. Exits with 1 when a parity row
/// misses its tolerance or fails, or a step fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    pub figures: Option<PathBuf>,
    /// Timed runs per step (0: parity only).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub repeats: usize,
    /// Untimed runs per step before them.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub warmup: usize,
    /// Time the steps on the device only.
    #[arg(long)]
    pub no_cpu_timing: bool,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let choice = flag.unwrap_or(crate::device::Choice::Auto);
    let device =
        crate::device::select(choice).map_err(|e| Error::Input(format!("--device: {e}")))?;
    let opts = device_check::Options {
        repeats: args.repeats,
        warmup: args.warmup,
        cpu_timing: !args.no_cpu_timing,
    };
    let report = device_check::run(&device, &opts, |l| {
        let _ = writeln!(out, "{l}");
        let _ = out.flush();
    })?;
    if let Some(path) = &args.figures {
        device_check::write_json(&report, path)?;
    }
    write_out(&mut out, &summary(&report, args.figures.as_deref()))?;
    if !report.ok {
        return Ok(exit::CHECK_FAILED);
    }
    Ok(exit::OK)
}

/// The closing line: parity rows within tolerance, failed steps, time, the JSON file.
fn summary(report: &Report, json: Option<&Path>) -> String {
    let failed = report.parity.iter().filter(|p| !p.ok).count();
    let untimed = report.timings.iter().filter(|t| t.error.is_some()).count();
    format!(
        "device-check: {} of {} parity rows within tolerance{}, {:.1} s{}\n",
        report.parity.len() - failed,
        report.parity.len(),
        if untimed > 0 {
            format!(", {untimed} steps failed")
        } else {
            String::new()
        },
        report.seconds,
        json.map(|p| format!("; figures in {}", p.display()))
            .unwrap_or_default()
    )
}
