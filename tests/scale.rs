//! Multi-trial search on worker processes through the trial ledger: the same result
//! whatever the number of workers and the order they finish in; a SIGKILLed worker's trial
//! claimed again after its lease; a SIGKILLed proposer restarted from the ledger; trials
//! that fail `max_attempts` times; workers of another spec refused. Every test runs real
//! processes on SQLite, and on PostgreSQL when `NAS_PIPE_TEST_POSTGRES` names a server
//! (`scripts/with-postgres.sh` starts one; the tests say when they skip it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nas_pipe::stages::search::ledger::{Outcome, State, Storage};

use crate::common::{Rng, bin, fails, root, run_ok, tempdir};

/// An NB201 tabular search in generations of 8, with `extra` spliced into `Trials(...)`.
fn tabular(
    dir: &Path,
    name: &str,
    strategy: &str,
    evaluations: u32,
    table: &Path,
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 11,
    device: Cpu,
    data: Cifar10(dir: "{data}"),
    space: "{space}",
    search: Trials(
        strategy: {strategy},
        evaluator: Tabular(table: "{table}", select: "cifar10-val", report: "cifar10-test"),
        evaluations: {evaluations},
        objectives: [Params, Macs],
        generation: 8,
        {extra}
    ),
)"#,
        data = root().join("data/cifar-10-batches-bin").display(),
        space = root().join("schemas/nas-bench-201.ron").display(),
        table = table.display(),
    );
    let p = dir.join(format!("{name}.ron"));
    std::fs::write(&p, text).unwrap();
    p
}

fn table() -> PathBuf {
    root().join("tables/nb201-mini-12ep.csv.gz")
}

/// The storages to test on: a SQLite file in `dir`, and PostgreSQL when one is given.
fn storages(dir: &Path, test: &str) -> Vec<String> {
    let mut out = vec![format!("sqlite:{}", dir.join("ledger.sqlite").display())];
    match std::env::var("NAS_PIPE_TEST_POSTGRES") {
        Ok(url) => out.push(url),
        Err(_) => eprintln!(
            "{test}: PostgreSQL part skipped: NAS_PIPE_TEST_POSTGRES is not set \
             (scripts/with-postgres.sh starts a server and sets it)"
        ),
    }
    out
}

/// What must be identical between two runs: the front, the genotype and every record
/// without its wall time.
fn result(run: &Path) -> (String, String, serde_json::Value) {
    let read = |f: &str| std::fs::read_to_string(run.join(f)).unwrap();
    let mut t: serde_json::Value = serde_json::from_str(&read("search/trials.json")).unwrap();
    for r in t["records"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("seconds");
    }
    (
        read("search/pareto.json"),
        read("genotype.ron"),
        t["records"].clone(),
    )
}

fn search(p: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["-q", "search"]).arg(p).arg("--out").arg(out);
    c
}

/// Claims every waiting trial, then completes them in a shuffled order, until the study
/// is finished: the most adversarial completion order a set of workers can produce.
fn shuffled_worker(pipeline: &Path, storage: &str, seed: u64) {
    let mut sources = nas_pipe::spec::Sources::default();
    let p = nas_pipe::pipeline::resolve::load(&mut sources, pipeline).unwrap();
    let mut ev =
        nas_pipe::stages::search::trials::evaluator(&p, &candle_core::Device::Cpu, None, false)
            .unwrap();
    let d = nas_pipe::stages::search::strategy::Decisions::of(&p.search_space);
    let mut l = Storage::parse(storage).unwrap().open().unwrap();
    let name = p.spec.name.value.clone();
    let mut rng = Rng(seed);
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let mut held = Vec::new();
        while let Some(c) = l.claim(&name, "shuffler").unwrap() {
            held.push(c);
        }
        if held.is_empty() {
            if l.study(&name).unwrap().is_some_and(|s| s.finished) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        while !held.is_empty() {
            let c = held.swap_remove(rng.below(held.len()));
            let arch = serde_json::from_str(&c.proposal).unwrap();
            let cand =
                nas_pipe::stages::search::evaluator::Candidate::new(&p.search_space, &d, arch)
                    .unwrap();
            let s = ev.evaluate(&cand).unwrap();
            let o = Outcome {
                accuracy: s.accuracy,
                report: s.report,
                seconds: 0.0,
            };
            l.complete(&name, "shuffler", c.id, &serde_json::to_string(&o).unwrap())
                .unwrap();
        }
    }
    panic!("the study did not finish in 120 s");
}

/// A study name of this test process: a PostgreSQL server outlives a test run, and a
/// study of the same spec would answer from its old trials.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn workers_give_the_same_search_whatever_their_number_and_order() {
    let dir = tempdir("scale-same");
    let name = unique("same");
    let p = tabular(
        &dir,
        &name,
        "Evolution(population: 10, sample: 3)",
        64,
        &table(),
        "",
    );
    let reference = dir.join("in-process");
    run_ok(&mut search(&p, &reference));
    let want = result(&reference.join(&name));
    // A generation of 8 is not the one-at-a-time loop: the record says so.
    assert_eq!(want.2.as_array().unwrap().len(), 64);
    for storage in storages(&dir, "workers_give_the_same_search") {
        for n in [1, 2, 4] {
            let out = dir.join(format!("w{n}-{}", &storage[..6]));
            run_ok(search(&p, &out).args(["--workers", &n.to_string(), "--storage", &storage]));
            assert!(
                result(&out.join(&name)) == want,
                "{n} workers on {storage} differ"
            );
        }
        let out = dir.join(format!("shuffled-{}", &storage[..6]));
        let mut proposer = search(&p, &out)
            .args(["--workers", "0", "--storage", &storage])
            .spawn()
            .unwrap();
        shuffled_worker(&p, &storage, 7);
        assert!(proposer.wait().unwrap().success());
        assert!(
            result(&out.join(&name)) == want,
            "shuffled completion on {storage} differs"
        );
    }
    // The default ledger is the run folder's SQLite file.
    let out = dir.join("default");
    run_ok(search(&p, &out).args(["--workers", "2"]));
    assert!(out.join(&name).join("ledger.sqlite").is_file());
    assert!(result(&out.join(&name)) == want);
    timeline_is_reported(&out.join(&name));
}

/// The run's `search/workers.json` holds one span per evaluation sent to the workers (not
/// the repeats, answered from earlier records), by workers `host:pid`, and the report
/// shows the workers and their timeline.
fn timeline_is_reported(run: &Path) {
    let t: nas_pipe::run::trials::Timeline =
        serde_json::from_slice(&std::fs::read(run.join("search/workers.json")).unwrap()).unwrap();
    let record: nas_pipe::run::trials::State =
        serde_json::from_slice(&std::fs::read(run.join("search/trials.json")).unwrap()).unwrap();
    let queued: Vec<usize> = record
        .records
        .iter()
        .filter(|r| r.evaluated() && !r.repeat)
        .map(|r| r.n)
        .collect();
    let mut ns: Vec<usize> = t.spans().map(|s| s.n).collect();
    ns.sort();
    assert!(queued.len() > 32, "{}", queued.len());
    assert_eq!(ns, queued);
    for w in &t.workers {
        assert!(
            w.worker
                .rsplit_once(':')
                .is_some_and(|(_, pid)| pid.parse::<u32>().is_ok())
        );
        assert!(
            w.spans.iter().all(|s| 0.0 <= s.start && s.start <= s.end),
            "{w:?}"
        );
    }
    run_ok(bin().args(["-q", "report"]).arg(run));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("Workers: when each evaluated what"),
        "no timeline"
    );
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    let line = format!("Evaluated on {} worker", t.workers.len());
    assert!(md.contains(&line), "{md}");
}

fn kill(c: &mut Child) {
    // SAFETY: plain kill(2) on a child this test started and has not reaped.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    let _ = c.wait();
}

/// Polls `f` every 20 ms for up to 60 s.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A short-training search on synthetic data: each trial trains for a moment, long enough
/// to be killed in.
fn training(dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 3,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 192, test: 32),
    space: "{}",
    search: Trials(
        strategy: Random,
        evaluator: Train(
            train_portion: 0.5,
            recipe: Retrain(channels: 4, layers: 1, epochs: 2, batch_size: 16,
                optimizer: Sgd(lr: 0.05, weight_decay: 3e-4)),
        ),
        evaluations: 4,
        generation: 2,
    ),
)"#,
        root().join("schemas/nas-bench-201.ron").display()
    );
    let p = dir.join(format!("{name}.ron"));
    std::fs::write(&p, text).unwrap();
    p
}

fn worker(p: &Path, out: &Path, storage: &str) -> Child {
    let mut c = bin();
    c.args(["-q", "worker"])
        .arg(p)
        .arg("--out")
        .arg(out)
        .args(["--storage", storage]);
    c.spawn().unwrap()
}

#[test]
fn a_killed_workers_trial_is_claimed_again_after_its_lease() {
    let dir = tempdir("scale-kill-worker");
    let name = unique("killed");
    let p = training(&dir, &name);
    let reference = dir.join("in-process");
    run_ok(&mut search(&p, &reference));
    let want = result(&reference.join(&name));
    for storage in storages(&dir, "a_killed_workers_trial_is_claimed_again") {
        let out = dir.join(format!("out-{}", &storage[..6]));
        let mut proposer = search(&p, &out)
            .args(["--workers", "0", "--lease", "1", "--storage", &storage])
            .spawn()
            .unwrap();
        let mut a = worker(&p, &out, &storage);
        let mut l = Storage::parse(&storage).unwrap().open().unwrap();
        let a_id = format!(":{}", a.id());
        let victim = wait_for("worker A to hold a trial", || {
            l.trials(&name, None).ok()?.into_iter().find(|t| {
                t.state == State::Running && t.worker.as_deref().is_some_and(|w| w.ends_with(&a_id))
            })
        });
        kill(&mut a);
        let mut b = worker(&p, &out, &storage);
        assert!(proposer.wait().unwrap().success());
        assert!(b.wait().unwrap().success());
        let t = l.trials(&name, None).unwrap();
        let again = t.iter().find(|t| t.id == victim.id).unwrap();
        assert_eq!((again.state, again.attempt), (State::Done, 2), "{again:?}");
        assert!(!again.worker.as_deref().unwrap().ends_with(&a_id));
        assert!(
            result(&out.join(&name)) == want,
            "a re-run trial changed the result on {storage}"
        );
    }
}

#[test]
fn a_killed_proposer_restarts_from_the_ledger() {
    let dir = tempdir("scale-kill-proposer");
    let name = unique("restart");
    let p = tabular(
        &dir,
        &name,
        "Reinforce(lr: 0.05, baseline_momentum: 0.9)",
        400,
        &table(),
        "",
    );
    let reference = dir.join("in-process");
    run_ok(&mut search(&p, &reference));
    let want = result(&reference.join(&name));
    for storage in storages(&dir, "a_killed_proposer_restarts") {
        let out = dir.join(format!("out-{}", &storage[..6]));
        let mut first = search(&p, &out)
            .args(["--workers", "2", "--storage", &storage])
            .spawn()
            .unwrap();
        let mut l = Storage::parse(&storage).unwrap().open().unwrap();
        wait_for("40 trials done", || {
            let t = l.trials(&name, None).ok()?;
            (t.iter().filter(|t| t.state == State::Done).count() >= 40).then_some(())
        });
        kill(&mut first);
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(&name).join("search/trials.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            record["finished"], false,
            "the proposer finished before it was killed"
        );
        // The first proposer's workers go on; the second proposer starts two more.
        run_ok(search(&p, &out).args(["--workers", "2", "--storage", &storage]));
        assert!(
            result(&out.join(&name)) == want,
            "the restarted search differs on {storage}"
        );
        let ws = l.workers(&name).unwrap();
        assert!(ws.len() >= 2, "{ws:?}");
        // The first proposer's orphaned workers exit by themselves once the study is
        // finished (signal 0 only asks whether a process is there).
        for w in ws {
            // SAFETY: kill(2) with signal 0 sends nothing.
            wait_for("the orphaned workers to exit", || {
                (unsafe { libc::kill(w.pid as i32, 0) } != 0).then_some(())
            });
        }
    }
}

#[test]
fn trials_that_keep_failing_are_marked_failed_and_listed() {
    let dir = tempdir("scale-failing");
    // A table missing every architecture whose first edge is none: those trials fail.
    let full = nas_pipe::data::Table::load(&table()).unwrap();
    let mut csv = String::from("arch,cellstr,cifar10-test,cifar10-val\n");
    let (test, val) = (
        full.column("cifar10-test").unwrap(),
        full.column("cifar10-val").unwrap(),
    );
    for row in 0..full.len() {
        let s = full.arch(row);
        if !s.starts_with("|none~0|") {
            csv += &format!(
                "{row},{s},{},{}\n",
                full.value(row, test),
                full.value(row, val)
            );
        }
    }
    let t = dir.join("partial.csv");
    std::fs::write(&t, csv).unwrap();
    let p = tabular(&dir, "failing", "Random", 40, &t, "");
    let storage = format!("sqlite:{}", dir.join("ledger.sqlite").display());
    run_ok(search(&p, &dir).args([
        "--workers",
        "2",
        "--max-attempts",
        "2",
        "--storage",
        &storage,
    ]));
    let trials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("failing/search/trials.json")).unwrap())
            .unwrap();
    let records = trials["records"].as_array().unwrap();
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.get("failed").is_some())
        .collect();
    assert!(
        !failed.is_empty(),
        "no architecture with a none first edge in 40+ draws?"
    );
    for r in &failed {
        let why = r["failed"].as_str().unwrap();
        assert!(
            why.starts_with("failed after 2 attempt(s): ") && why.contains("is not in the table"),
            "{why}"
        );
        assert!(r["genotype"].as_str().is_some() && r.get("accuracy").is_none());
    }
    // Failed trials cost no evaluation: the budget is spent on scored ones.
    let scored = records.iter().filter(|r| r.get("failed").is_none()).count();
    assert_eq!(scored, 40);
    let mut l = Storage::parse(&storage).unwrap().open().unwrap();
    let ledger_failed = l
        .trials("failing", None)
        .unwrap()
        .into_iter()
        .filter(|t| t.state == State::Failed)
        .count();
    assert_eq!(ledger_failed, failed.len());
    let status = run_ok(
        bin()
            .arg("status")
            .arg(&p)
            .arg("--out")
            .arg(&dir)
            .args(["--storage", &storage]),
    );
    assert!(
        status.contains(&format!("failed {}", failed.len())),
        "{status}"
    );
    assert!(status.contains("is not in the table"), "{status}");
}

#[test]
fn workers_of_another_spec_or_a_bad_storage_are_refused() {
    let dir = tempdir("scale-refused");
    let p = tabular(&dir, "refused", "Random", 8, &table(), "");
    let storage = format!("sqlite:{}", dir.join("ledger.sqlite").display());
    run_ok(search(&p, &dir).args(["--workers", "1", "--storage", &storage]));
    // Same name, another seed: another spec hash.
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("seed: 11", "seed: 12");
    let other = dir.join("other.ron");
    std::fs::write(&other, text).unwrap();
    let e = fails(
        bin()
            .args(["worker"])
            .arg(&other)
            .arg("--out")
            .arg(&dir)
            .args(["--storage", &storage]),
    );
    assert!(
        e.contains("spec hash") && e.contains("proposer's pipeline file"),
        "{e}"
    );
    let fresh = dir.join("fresh");
    let e = fails(search(&p, &fresh).args(["--storage", "postgres://nas:secret@127.0.0.1/nas"]));
    assert!(e.contains("PGPASSWORD") && !e.contains("secret"), "{e}");
    let e = fails(search(&p, &fresh).args(["--storage", "postgres://nas@127.0.0.1:1/nas"]));
    assert!(e.contains("cannot connect"), "{e}");
    let e = fails(search(&root().join("pipelines/smoke.ron"), &fresh).args(["--workers", "2"]));
    assert!(e.contains("only those run on workers"), "{e}");
    let e = fails(search(&p, &fresh).args(["--storage", "redis://x"]));
    assert!(e.contains("neither sqlite:PATH nor postgres://"), "{e}");
    // A ledger of a newer schema.
    let newer = dir.join("newer.sqlite");
    {
        let mut l = Storage::Sqlite(newer.clone()).open().unwrap();
        let _ = l.now().unwrap();
    }
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.execute(
        "UPDATE meta SET value = '7' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let e = fails(search(&p, &dir.join("n")).args([
        "--workers",
        "1",
        "--storage",
        &format!("sqlite:{}", newer.display()),
    ]));
    assert!(e.contains("ledger schema version 7"), "{e}");
}

/// Runs a checker on a generated file when the tool is there; says so when it is not.
fn checked_by(tool: &str, args: &[&str], file: &Path) {
    match Command::new(tool).args(args).arg(file).output() {
        Ok(o) => assert!(
            o.status.success(),
            "{tool} rejects {}: {}",
            file.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => eprintln!(
            "launchers: {tool} is missing; {} not checked with it",
            file.display()
        ),
    }
}

#[test]
fn launchers_write_a_slurm_array_and_a_kubernetes_indexed_job() {
    let dir = tempdir("scale-launch");
    let golden = root().join("tests/golden/launch");
    let slurm = dir.join("search.sbatch");
    run_ok(
        bin()
            .args([
                "launch",
                "slurm",
                "pipelines/nb201-random.ron",
                "--workers",
                "64",
                "--storage",
                "postgres://nas@db.example:5432/nas",
                "-o",
            ])
            .arg(&slurm),
    );
    let text = std::fs::read_to_string(&slurm)
        .unwrap()
        .replace(&slurm.display().to_string(), "FILE");
    crate::common::golden(&golden.join("slurm.sbatch"), &text);
    checked_by("bash", &["-n"], &slurm);
    let k8s = dir.join("job.yaml");
    run_ok(
        bin()
            .args([
                "launch",
                "k8s",
                "pipelines/nb201-random.ron",
                "--workers",
                "64",
                "--image",
                "registry.example/nas-pipe:0.1.0",
                "--volume",
                "nas-work",
                "-o",
            ])
            .arg(&k8s),
    );
    crate::common::golden(
        &golden.join("k8s.yaml"),
        &std::fs::read_to_string(&k8s).unwrap(),
    );
    // A YAML parser reads the manifest as an Indexed Job whose shell script parses.
    let check = r#"
import sys, yaml, subprocess
d = yaml.safe_load(open(sys.argv[1]))
assert d["kind"] == "Job" and d["spec"]["completionMode"] == "Indexed", d
assert d["spec"]["completions"] == 64 and d["spec"]["parallelism"] == 64
c = d["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
assert env["PGPASSWORD"] == {"name": "nas-pipe-ledger", "key": "password"}, env
assert env["NAS_PIPE_STORAGE"]["key"] == "url"
subprocess.run(["sh", "-n", "-c", c["args"][0]], check=True)
"#;
    match Command::new("python3").args(["-c", "import yaml"]).status() {
        Ok(s) if s.success() => run_ok(Command::new("python3").args(["-c", check]).arg(&k8s)),
        _ => {
            eprintln!("launchers: python3 with PyYAML is missing; the manifest is not parsed");
            String::new()
        }
    };
    // Workers on many machines need PostgreSQL.
    let e = fails(bin().args([
        "launch",
        "slurm",
        "pipelines/nb201-random.ron",
        "--workers",
        "4",
        "--storage",
        "sqlite:x.sqlite",
    ]));
    assert!(e.contains("need a PostgreSQL ledger"), "{e}");
}

#[test]
fn a_worker_whose_proposer_is_gone_gives_up_after_its_idle_timeout() {
    let dir = tempdir("scale-idle");
    let name = unique("idle");
    let p = tabular(&dir, &name, "Random", 64, &table(), "");
    let storage = format!("sqlite:{}", dir.join("ledger.sqlite").display());
    let idle = |c: &mut Command| -> String {
        let t0 = Instant::now();
        let e = fails(c.args(["--idle-timeout", "1s"]));
        assert!(t0.elapsed() < Duration::from_secs(60), "{e}");
        e
    };
    // No proposer has opened the study.
    let e = idle(
        bin()
            .args(["-q", "worker"])
            .arg(&p)
            .arg("--out")
            .arg(&dir)
            .args(["--storage", &storage]),
    );
    assert!(
        e.contains("proposer") && e.contains("--idle-timeout"),
        "{e}"
    );
    // The proposer queues its first generation for workers elsewhere, then dies.
    let mut proposer = search(&p, &dir)
        .args(["--storage", &storage])
        .spawn()
        .unwrap();
    let mut l = Storage::parse(&storage).unwrap().open().unwrap();
    wait_for("the first generation queued", || {
        (l.trials(&name, None).ok()?.len() == 8).then_some(())
    });
    kill(&mut proposer);
    let e = idle(
        bin()
            .args(["-q", "worker"])
            .arg(&p)
            .arg("--out")
            .arg(&dir)
            .args(["--storage", &storage]),
    );
    assert!(e.contains("is not running") && e.contains(&name), "{e}");
    let t = l.trials(&name, None).unwrap();
    assert!(t.iter().all(|t| t.state == State::Done), "{t:?}");
}
