//! `nas-pipe launch`: writes the files a cluster's own scheduler runs a distributed
//! multi-trial search with: a Slurm `sbatch` job-array script, or a Kubernetes Indexed Job
//! manifest. Task (or index) 0 runs the proposer and a worker, every other task a worker;
//! all meet in a PostgreSQL trial ledger.

use std::path::{Path, PathBuf};

use super::common::print;
use crate::error::{Error, Result, exit};
use crate::spec::Sources;
use crate::stages::search::ledger::Storage;

/// Write a Slurm job-array script or a Kubernetes Indexed Job manifest that runs a
/// pipeline's multi-trial search on many workers through a PostgreSQL trial ledger.
///
/// The proposer (task 0) and the workers must reach the same run folder (a shared file
/// system or volume) and the same database; the database password comes from PGPASSWORD
/// (Slurm: exported from the submitting shell; Kubernetes: the Secret's `password` key).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub enum Target {
    /// An `sbatch` job-array script: `sbatch FILE` submits it.
    Slurm(Slurm),
    /// A Kubernetes Indexed Job: `kubectl apply -f FILE` starts it.
    K8s(K8s),
}

/// What both targets take.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// A pipeline file, as the tasks see it from their working folder.
    pub pipeline: PathBuf,
    /// Tasks in the array (task 0 also runs the proposer).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub workers: u32,
    /// The folder run folders are written under, as the tasks see it.
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// The nas-pipe executable as the tasks find it.
    #[arg(long, default_value = "nas-pipe", value_name = "PATH")]
    pub bin: String,
    /// Write the file here instead of stdout; a different file already there is refused,
    /// never replaced.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct Slurm {
    #[command(flatten)]
    pub common: Common,
    /// The PostgreSQL ledger: postgres://USER@HOST[:PORT]/DB (no password: PGPASSWORD).
    /// Default: the pipeline's `storage`.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// CPUs per task.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS))]
    pub cpus: u32,
    /// Wall-time limit per task (sbatch --time): MINUTES, MINUTES:SECONDS,
    /// HOURS:MINUTES:SECONDS, DAYS-HOURS[:MINUTES[:SECONDS]] or UNLIMITED.
    #[arg(long, default_value = "24:00:00", value_name = "TIME", value_parser = slurm_time)]
    pub time: String,
}

#[derive(Debug, clap::Args)]
pub struct K8s {
    #[command(flatten)]
    pub common: Common,
    /// The container image with nas-pipe.
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// The Secret holding the ledger's URL (key `url`) and password (key `password`).
    #[arg(long, default_value = "nas-pipe-ledger", value_name = "NAME")]
    pub secret: String,
    /// The PersistentVolumeClaim of the shared volume (mounted at /work, the working
    /// folder: the pipeline, its space and the run folders live there).
    #[arg(long, value_name = "CLAIM")]
    pub volume: String,
    /// CPUs per task (resource request).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS))]
    pub cpus: u32,
}

/// The most CPUs a task may ask for: above any node's count.
const MAX_CPUS: i64 = 4096;

/// Parses `--time` as sbatch reads it; anything else (a line break above all, which would
/// end the `#SBATCH` line and put the rest in the script) is refused.
fn slurm_time(s: &str) -> std::result::Result<String, String> {
    let number = |p: &str| (1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let rest = s
        .split_once('-')
        .map_or(Some(s), |(days, rest)| number(days).then_some(rest));
    let ok = matches!(s, "UNLIMITED" | "INFINITE")
        || rest.is_some_and(|r| r.split(':').count() <= 3 && r.split(':').all(number));
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "not a Slurm time: write MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, \
             DAYS-HOURS[:MINUTES[:SECONDS]] or UNLIMITED (e.g. 24:00:00 or 2-00)"
                .into(),
        )
    }
}

pub fn run(args: &Args) -> Result<i32> {
    let (text, output) = match &args.target {
        Target::Slurm(s) => (slurm(s)?, &s.common.output),
        Target::K8s(k) => (k8s(k)?, &k.common.output),
    };
    match output {
        Some(path) => write_new(path, &text)?,
        None => print(&text)?,
    }
    Ok(exit::OK)
}

/// Writes `text` to `path` (atomically) unless something else is there: a file of the
/// user's is never replaced. The same text already there is no change.
fn write_new(path: &Path, text: &str) -> Result<()> {
    if path
        .as_os_str()
        .to_string_lossy()
        .chars()
        .any(char::is_control)
    {
        return Err(Error::Input(format!(
            "--output {path:?}: the path has a control character, and it is written into the \
             file's comments; give another name"
        )));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::fsutil::write_atomic(path, text.as_bytes())
        }
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if m.is_file() && m.len() == text.len() as u64 && same_text(path, text) => Ok(()),
        Ok(_) => Err(Error::Input(format!(
            "--output {}: already exists and is not this file; nothing was overwritten. Remove \
             it, or give another --output",
            path.display()
        ))),
    }
}

fn same_text(path: &Path, text: &str) -> bool {
    std::fs::read(path).is_ok_and(|b| b == text.as_bytes())
}

/// The pipeline's name, after checking the pipeline has a search workers can run.
fn pipeline_name(path: &Path) -> Result<(String, Option<String>)> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, path)?;
    crate::stages::search::worker::check_distributable(&p)?;
    Ok((p.spec.name.value.clone(), p.spec.storage.clone()))
}

/// A PostgreSQL URL: workers on many machines cannot share a SQLite file safely.
fn postgres_url(url: Option<String>) -> Result<String> {
    let url = url.ok_or_else(|| {
        Error::Input("give the ledger with --storage postgres://USER@HOST[:PORT]/DB (or the pipeline's `storage`)".into())
    })?;
    match Storage::parse(&url)? {
        Storage::Postgres(u) => Ok(u),
        Storage::Sqlite(_) => Err(Error::Input(
            "workers on a cluster need a PostgreSQL ledger: SQLite's locks are not safe on a \
             network file system"
                .into(),
        )),
    }
}

/// Quotes `s` for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `sbatch` script.
fn slurm(a: &Slurm) -> Result<String> {
    let c = &a.common;
    let (name, spec_storage) = pipeline_name(&c.pipeline)?;
    let url = postgres_url(a.storage.clone().or(spec_storage))?;
    Ok(format!(
        r#"#!/bin/bash
# Written by `nas-pipe launch slurm`: the multi-trial search of pipeline "{name}" on {n}
# workers through the PostgreSQL trial ledger {url}.
# Task 0 runs the proposer and a worker; tasks 1-{last} run a worker each. Workers wait for
# the proposer's study and exit once it is finished. Submit from the folder the paths below
# are relative to, with the database password in PGPASSWORD (sbatch exports it):
#   PGPASSWORD=... sbatch {file}
#SBATCH --job-name=nas-pipe-{name}
#SBATCH --array=0-{last}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output=nas-pipe-{name}-%A_%a.log
set -euo pipefail
cd "${{SLURM_SUBMIT_DIR:-.}}"
storage={url_q}
if [ "${{SLURM_ARRAY_TASK_ID:-0}}" = 0 ]; then
    {bin} --quiet run {pipeline} --out {out} --storage "$storage" --workers 0 &
    proposer=$!
fi
{bin} --quiet worker {pipeline} --out {out} --storage "$storage"
if [ -n "${{proposer:-}}" ]; then
    wait "$proposer"
fi
"#,
        n = c.workers,
        last = c.workers - 1,
        file = c
            .output
            .as_deref()
            .map_or("FILE".into(), |p| p.display().to_string()),
        cpus = a.cpus,
        time = a.time,
        url_q = sh(&url),
        bin = sh(&c.bin),
        pipeline = sh(&c.pipeline.display().to_string()),
        out = sh(&c.out.display().to_string()),
    ))
}

/// A Kubernetes object name from a pipeline name: lowercase letters, digits and `-`.
fn dns_name(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let s = format!("nas-pipe-{}", s.trim_matches('-'));
    s[..s.len().min(63)].trim_end_matches('-').to_string()
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The Indexed Job manifest.
fn k8s(a: &K8s) -> Result<String> {
    let c = &a.common;
    let (name, _) = pipeline_name(&c.pipeline)?;
    let script = format!(
        "if [ \"$JOB_COMPLETION_INDEX\" = 0 ]; then\n  {bin} --quiet run {pipeline} --out {out} --storage \"$NAS_PIPE_STORAGE\" --workers 0 &\n  proposer=$!\nfi\n{bin} --quiet worker {pipeline} --out {out} --storage \"$NAS_PIPE_STORAGE\"\nif [ -n \"${{proposer:-}}\" ]; then wait \"$proposer\"; fi\n",
        bin = sh(&c.bin),
        pipeline = sh(&c.pipeline.display().to_string()),
        out = sh(&c.out.display().to_string()),
    );
    let script: String = script
        .lines()
        .map(|l| format!("                {l}\n"))
        .collect();
    let job = dns_name(&name);
    Ok(format!(
        r#"# Written by `nas-pipe launch k8s`: the multi-trial search of pipeline "{name}" on {n}
# workers through a PostgreSQL trial ledger. Index 0 runs the proposer and a worker, every
# other index a worker. The Secret {secret} holds the ledger's URL (key `url`,
# postgres://USER@HOST[:PORT]/DB) and password (key `password`); the volume claim
# {volume} is the shared working folder (the pipeline, its space, the run folders).
#   kubectl create secret generic NAME --from-literal=url=postgres://... --from-literal=password=...
#   kubectl apply -f FILE
apiVersion: batch/v1
kind: Job
metadata:
  name: {job}
  labels:
    app.kubernetes.io/name: nas-pipe
spec:
  completionMode: Indexed
  completions: {n}
  parallelism: {n}
  backoffLimit: {backoff}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: nas-pipe
    spec:
      restartPolicy: OnFailure
      containers:
        - name: nas-pipe
          image: {image}
          workingDir: /work
          command: ["/bin/sh", "-c"]
          args:
            - |
{script}          env:
            - name: NAS_PIPE_STORAGE
              valueFrom:
                secretKeyRef:
                  name: {secret}
                  key: url
            - name: PGPASSWORD
              valueFrom:
                secretKeyRef:
                  name: {secret}
                  key: password
          resources:
            requests:
              cpu: "{cpus}"
          volumeMounts:
            - name: work
              mountPath: /work
      volumes:
        - name: work
          persistentVolumeClaim:
            claimName: {volume}
"#,
        n = c.workers,
        backoff = 3 * c.workers,
        secret = json(&a.secret),
        volume = json(&a.volume),
        image = json(&a.image),
        cpus = a.cpus,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_times_are_checked() {
        for ok in [
            "60",
            "30:00",
            "24:00:00",
            "2-00",
            "2-12:30",
            "2-12:30:00",
            "UNLIMITED",
        ] {
            assert_eq!(slurm_time(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "1:2:3:4",
            "x",
            "1-",
            "-1",
            "1:00\nrm -rf ~",
            "1 00",
            "1-2-3",
        ] {
            assert!(slurm_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubernetes_names_and_shell_quotes() {
        assert_eq!(dns_name("nb201_Random"), "nas-pipe-nb201-random");
        assert!(dns_name(&"x".repeat(100)).len() <= 63);
        assert_eq!(sh("a'b"), r"'a'\''b'");
    }
}
