//! `nas-pipe run` and friends: devices, staged runs resumed after SIGKILL, the cache,
//! run errors, the report command on a run folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_pipe::spec::Sources;

use crate::common::*;

// ---- Devices ----

/// A CUDA request that this build or this machine cannot serve is an error at the pipeline's
/// `device` line (or at `--device`), exit 2, never a fallback to the CPU; `--device cpu`
/// overrides the file.
#[test]
fn cuda_without_cuda_is_an_error_at_the_device_line() {
    if nas_pipe::device::test_devices().len() > 1 {
        return; // this machine has a working GPU
    }
    let dir = tempdir("cuda-refused");
    let text = std::fs::read_to_string(root().join("pipelines/smoke.ron"))
        .unwrap()
        .replace("device: Cpu,", "device: Cuda(0),")
        .replace("../schemas/", &format!("{}/schemas/", root().display()));
    let file = dir.join("cuda.ron");
    std::fs::write(&file, &text).unwrap();
    let out = bin()
        .args([
            "status",
            file.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cuda.ron:5:13: Cuda(0)"), "{e}");
    assert!(e.contains("^^^^^^^") && e.contains("--device cpu"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let flag = bin()
        .args(["status", "pipelines/smoke.ron", "--device", "cuda:1"])
        .args(["--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(flag.status.code(), Some(2));
    let e = String::from_utf8_lossy(&flag.stderr);
    assert!(e.starts_with("nas-pipe: --device: Cuda(1)"), "{e}");
    let cpu = bin()
        .args(["status", file.to_str().unwrap(), "--device", "cpu"])
        .args(["--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        cpu.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cpu.stderr)
    );
    let bad = bin()
        .args(["status", "pipelines/smoke.ron", "--device", "gpu"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected auto, cpu, cuda or cuda:N"));
}

/// `device-check` on the CPU compares the CPU kernels with the compositions CUDA runs and
/// writes every row to its JSON.
#[test]
fn device_check_on_the_cpu_passes_and_writes_json() {
    let dir = tempdir("device-check");
    let json = dir.join("check.json");
    let out = bin()
        .args([
            "device-check",
            "--device",
            "cpu",
            "--repeats",
            "0",
            "--figures",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["parity"].as_array().unwrap();
    assert_eq!(rows.len(), 44, "{text}");
    assert!(rows.iter().all(|r| r["ok"] == true));
    assert!(rows.iter().any(|r| r["name"] == "op SepConv(kernel: 5) s2"));
    assert!(v["timings"].as_array().unwrap().is_empty());
    assert!(
        text.contains("44 of 44 parity rows within tolerance"),
        "{text}"
    );
}

// ---- nas-pipe run: stages, cache, resume, status ----

/// `pipelines/fashion-mnist.ron` with its data folder and space path replaced, in `dir`.
fn fashion_pipeline(dir: &Path, data: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("pipelines/fashion-mnist.ron"))
        .unwrap()
        .replace("/usr/share/datasets/fashion-mnist", data.to_str().unwrap())
        .replace("../schemas/", &format!("{}/schemas/", root().display()));
    let file = dir.join("fm.ron");
    std::fs::write(&file, text).unwrap();
    file
}

/// Writes the four Fashion-MNIST files with `images` declared in the headers but the data
/// cut short: only the headers are read by `check`.
fn fake_idx_headers(dir: &Path, train: u32, test: u32, image_magic: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let file = |name: &str, magic: u32, dims: &[u32]| {
        let mut b = magic.to_be_bytes().to_vec();
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend([0u8; 16]);
        std::fs::write(dir.join(name), b).unwrap();
    };
    file("train-images-idx3-ubyte", image_magic, &[train, 28, 28]);
    file("train-labels-idx1-ubyte", 0x801, &[train]);
    file("t10k-images-idx3-ubyte", image_magic, &[test, 28, 28]);
    file("t10k-labels-idx1-ubyte", 0x801, &[test]);
}

/// Issue #22: `check` said `ok` for a pipeline whose data folder did not exist, and `run`
/// failed in the search stage after creating the run folder. Both now name the folder or
/// file, say where the data comes from and exit 2 before touching anything; `check` reads
/// only the files' headers.
#[test]
fn check_and_run_name_missing_or_wrong_data_files() {
    let dir = tempdir("data-probe");
    let data = dir.join("fm");
    let file = fashion_pipeline(&dir, &data);
    let out = dir.join("out");
    let e = fails(bin().arg("check").arg(&file));
    assert!(
        e.starts_with(&format!(
            "nas-pipe: {}: no such directory (expected the fashion-mnist IDX files in it)\n",
            data.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("= help: Debian's package dataset-fashion-mnist"),
        "{e}"
    );
    let e = fails(bin().arg("run").arg(&file).arg("--out").arg(&out));
    assert!(e.contains("no such directory"), "{e}");
    assert!(
        !out.join("fashion-mnist").exists(),
        "run created its folder"
    );
    // The single-stage commands say the same, with the way out.
    for cmd in ["search", "train", "eval", "validate"] {
        let e = fails(bin().arg(cmd).arg(&file).arg("--out").arg(&out));
        assert!(
            e.contains("no such directory") && e.contains("= help: Debian's package"),
            "{cmd}: {e}"
        );
    }

    fake_idx_headers(&data, 60000, 10000, 0x803);
    let ok = run_ok(bin().arg("check").arg(&file));
    assert!(
        ok.contains(&format!(
            "data: {}: 60,000 training and 10,000 test images\n",
            data.display()
        )),
        "{ok}"
    );
    fake_idx_headers(&data, 60000, 10000, 0x801);
    let e = fails(bin().arg("check").arg(&file));
    assert!(
        e.starts_with(&format!(
            "nas-pipe: {}: bad magic number 2049",
            data.join("train-images-idx3-ubyte").display()
        )),
        "{e}"
    );
    // A tabular search reads no images: its data folder need not exist.
    run_ok(bin().args(["check", "pipelines/nb201-random.ron"]));
}

/// A pipeline with every stage but the ONNX Runtime ones, sized so that search epochs take
/// about a second and retrain epochs a few tenths on 2 cores: long enough to be killed in
/// the middle. `retrain_lr` is the knob the cache tests turn.
fn staged_pipeline(dir: &Path, name: &str, retrain_lr: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 3,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 256, test: 64),
    space: "{}",
    search: Darts(
        epochs: 4, images: 128, batch_size: 16, channels: 4, layers: 3,
        weights: Sgd(lr: 0.025, lr_min: 0.001, weight_decay: 3e-4, grad_clip: 5.0),
        arch: Adam(lr: 3e-3, betas: (0.5, 0.999), weight_decay: 1e-3),
    ),
    retrain: Retrain(
        channels: 8, layers: 5, epochs: 8, batch_size: 16, drop_path: 0.2,
        optimizer: Sgd(lr: {retrain_lr}, weight_decay: 3e-4, grad_clip: 5.0),
        augment: (crop_padding: 1, flip: true),
    ),
    export: Onnx(),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join(format!("{name}.ron"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_cmd(p: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg("run").arg(p).arg("--out").arg(out);
    c
}

/// Issue #22: the log of a run said nothing about what a stage made (derive did not print
/// the cells). Each stage now ends with a summary line; `--quiet` prints nothing on stderr
/// and the same results on stdout.
#[test]
fn stage_lines_summarise_and_quiet_prints_no_progress() {
    let dir = tempdir("run-log");
    let p = staged_pipeline(&dir, "logged", "0.05");
    let out = dir.join("out");
    let o = run_cmd(&p, &out).arg("--quiet").output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(stderr, "");
    assert!(
        action_of(&stdout, "search").starts_with("ran in"),
        "{stdout}"
    );
    let o = run_cmd(&p, &out)
        .args(["--only", "derive"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let done = stderr
        .lines()
        .find(|l| l.starts_with("[2/5] derive: done in "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        done.contains(": normal: ") && done.contains("; reduce: "),
        "{done}"
    );
}

/// `--json`: every line on stderr is one JSON object with an `event`; progress events carry
/// the numbers of the plain lines, each stage reports `running` then `done` with its
/// seconds, and errors (ours and the command line's) are `error` events with the exit code.
#[test]
fn json_progress_lines_are_one_object_each() {
    let dir = tempdir("run-json");
    let p = staged_pipeline(&dir, "json", "0.05");
    let out = dir.join("out");
    let o = run_cmd(&p, &out)
        .args(["--json", "--log-every", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let of = |kind: &'static str| events.iter().filter(move |e| e["event"] == kind);
    for stage in ["search", "derive"] {
        let statuses: Vec<&str> = of("stage")
            .filter(|e| e["stage"] == stage)
            .map(|e| e["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["running", "done"], "{stderr}");
    }
    let done = of("stage").find(|e| e["status"] == "done").unwrap();
    assert!(done["seconds"].as_f64().unwrap() >= 0.0, "{done}");
    let last = of("progress")
        .rfind(|e| e["task"].as_str().unwrap().starts_with("search"))
        .unwrap_or_else(|| panic!("no search progress in {stderr}"));
    assert_eq!(last["done"], last["total"], "{last}");
    assert_eq!(last["unit"], "image");
    assert!(last["rate"].as_f64().unwrap() > 0.0, "{last}");
    // Issue #22: the whole pipeline's ETA, from the search's and retraining's bars: never
    // less than the bar's own, and sane for a run of seconds.
    for stage in ["search", "retrain"] {
        let e = of("progress")
            .find(|e| e["task"].as_str().unwrap().starts_with(stage))
            .unwrap_or_else(|| panic!("no {stage} progress in {stderr}"));
        let (eta, whole) = (e["eta_s"].as_f64(), e["pipeline_eta_s"].as_f64());
        assert!(
            whole.is_some_and(|w| w >= eta.unwrap() && w < 3600.0),
            "{e}"
        );
    }

    let o = bin()
        .args(["check", "--json"])
        .arg(dir.join("missing.ron"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(
        (e["event"].as_str(), e["exit_code"].as_i64()),
        (Some("error"), Some(2))
    );
    assert!(
        e["message"].as_str().unwrap().contains("missing.ron"),
        "{e}"
    );
    let o = bin()
        .args(["run", "--json", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("--no-such-flag"),
        "{e}"
    );
}

/// The action `nas-pipe run` printed for `stage` ("cached", "ran in 1.2s", ...).
fn action_of(stdout: &str, stage: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix(stage)
                .filter(|_| l.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no line for {stage} in:\n{stdout}"))
        .trim()
        .to_string()
}

fn lock_of(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("nas-pipe.lock")).unwrap()).unwrap()
}

fn lock_entry(run: &Path, stage: &str) -> Option<serde_json::Value> {
    lock_of(run)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["stage"] == stage)
        .cloned()
}

/// Epochs a search or retrain state file records as finished.
fn epochs_done(state: &Path) -> usize {
    std::fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .unwrap_or(0) as usize
}

/// Every file under `dir` with its bytes, temp files included (a test that finds one
/// left behind fails).
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Starts `nas-pipe run` and SIGKILLs it as soon as `state` records a finished epoch, with
/// the stage still running; on the way, a second run on the same folder must be refused.
fn kill_during(p: &Path, out: &Path, run: &Path, stage: &str, state: &str) {
    let mut child = run_cmd(p, out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut refused = false;
    while epochs_done(&run.join(state)) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first {stage} checkpoint"
        );
        assert!(
            t0.elapsed().as_secs() < 300,
            "no {stage} checkpoint after 5 minutes"
        );
        if !refused && run.join(".nas-pipe.busy").exists() && lock_entry_exists(run, stage) {
            // The folder is held: a second run stops at once with a clear error.
            let err = fails(&mut run_cmd(p, out));
            assert!(err.contains("is in use by `nas-pipe run"), "{err}");
            assert!(err.contains("(pid "), "{err}");
            refused = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(refused, "never saw the folder in use");
    let e = lock_entry(run, stage).unwrap();
    assert_eq!(e["status"], "running", "killed after {stage} finished: {e}");
}

fn lock_entry_exists(run: &Path, stage: &str) -> bool {
    std::fs::read(run.join("nas-pipe.lock"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| {
            v["stages"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["stage"] == stage))
        })
}

/// A run killed with SIGKILL in the middle of the search, and again in the middle of the
/// retraining, continues each time from the last checkpoint and ends with the same files
/// as an uninterrupted run.
#[test]
fn sigkilled_run_resumes_and_equals_an_uninterrupted_one() {
    let dir = tempdir("run-kill");
    let p = staged_pipeline(&dir, "k", "0.05");
    let (straight, killed) = (dir.join("straight"), dir.join("killed"));
    run_ok(&mut run_cmd(&p, &straight));
    let run = killed.join("k");

    kill_during(&p, &killed, &run, "search", "search/state.json");
    let st = run_ok(bin().args(["status"]).arg(&p).arg("--out").arg(&killed));
    assert!(st.contains("interrupted after epoch"), "{st}");
    kill_during(&p, &killed, &run, "retrain", "retrain/state.json");
    let out = run_ok(&mut run_cmd(&p, &killed));
    assert_eq!(action_of(&out, "search"), "cached", "{out}");
    assert!(action_of(&out, "retrain").starts_with("ran in"), "{out}");

    let a = straight.join("k");
    for f in [
        "genotype.ron",
        "search/checkpoint-4.safetensors",
        "retrain/last.safetensors",
        "retrain/best.safetensors",
        "retrain/checkpoint-8.safetensors",
        "retrain/evaluation.json",
        "model.onnx",
    ] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(run.join(f)).unwrap(),
            "{f} differs from the uninterrupted run's"
        );
    }
    // Metrics equal but for the timings.
    let strip = |path: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let epochs = if v.is_array() {
            &mut v
        } else {
            &mut v["metrics"]
        };
        for m in epochs.as_array_mut().unwrap() {
            m["seconds"] = 0.into();
            m["images_per_sec"] = 0.into();
            m["eval_seconds"] = 0.into();
        }
        v
    };
    assert_eq!(
        strip(&a.join("retrain/metrics.json")),
        strip(&run.join("retrain/metrics.json"))
    );
    let (sa, sb) = (
        strip(&a.join("search/state.json")),
        strip(&run.join("search/state.json")),
    );
    assert_eq!(sa["metrics"], sb["metrics"]);
    assert_eq!(sa["history"], sb["history"]);
    // Same keys in both locks; no temp file left by the kills.
    for stage in ["search", "derive", "retrain", "export", "report"] {
        assert_eq!(
            lock_entry(&a, stage).unwrap()["key"],
            lock_entry(&run, stage).unwrap()["key"]
        );
        assert_eq!(lock_entry(&run, stage).unwrap()["status"], "done");
    }
    let files = tree(&run);
    assert!(
        !files.iter().any(|(f, _)| f.contains(".tmp")),
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    // A second run is a full cache hit.
    let out = run_ok(&mut run_cmd(&p, &killed));
    for stage in ["search", "derive", "retrain", "export", "report"] {
        assert_eq!(action_of(&out, stage), "cached", "{out}");
    }
}

/// Editing only the retrain section reruns retrain and what follows, never the search;
/// the replaced outputs are set aside, and undoing the edit moves them back.
#[test]
fn editing_retrain_reruns_retrain_and_later_stages_only() {
    let dir = tempdir("run-edit");
    let out = dir.join("out");
    let p = staged_pipeline(&dir, "e", "0.05");
    let first = run_ok(&mut run_cmd(&p, &out));
    for stage in ["search", "derive", "retrain", "export", "report"] {
        assert!(action_of(&first, stage).starts_with("ran in"), "{first}");
    }
    let run = out.join("e");
    let search_files = tree(&run.join("search"));
    let search_entry = lock_entry(&run, "search").unwrap();
    let old_weights = std::fs::read(run.join("retrain/last.safetensors")).unwrap();
    let old_retrain = lock_entry(&run, "retrain").unwrap();
    let state_of = |st: &str, stage: &str| -> String {
        st.lines()
            .find(|l| l.trim_start().starts_with(&format!("{stage} ")))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };

    // Other split fractions change the training part the search and retraining see.
    std::fs::create_dir_all(dir.join("split")).unwrap();
    let split = staged_pipeline(&dir.join("split"), "e", "0.05");
    let text = std::fs::read_to_string(&split).unwrap();
    std::fs::write(
        &split,
        text.replace("seed: 3,", "seed: 3, split: (validation: 0.2),"),
    )
    .unwrap();
    let st = run_ok(bin().args(["status"]).arg(&split).arg("--out").arg(&out));
    assert_eq!(state_of(&st, "search"), "stale", "{st}");
    assert_eq!(state_of(&st, "retrain"), "stale", "{st}");
    assert!(st.contains("the split section changed"), "{st}");

    let p = staged_pipeline(&dir, "e", "0.02");
    let st = run_ok(bin().args(["status"]).arg(&p).arg("--out").arg(&out));
    assert_eq!(state_of(&st, "search"), "done", "{st}");
    assert_eq!(state_of(&st, "derive"), "done", "{st}");
    assert_eq!(state_of(&st, "retrain"), "stale", "{st}");
    assert!(st.contains("the retrain section changed"), "{st}");
    assert_eq!(state_of(&st, "export"), "stale", "{st}");

    let second = run_ok(&mut run_cmd(&p, &out));
    assert_eq!(action_of(&second, "search"), "cached", "{second}");
    assert_eq!(action_of(&second, "derive"), "cached", "{second}");
    for stage in ["retrain", "export", "report"] {
        assert!(action_of(&second, stage).starts_with("ran in"), "{second}");
    }
    assert!(
        tree(&run.join("search")) == search_files,
        "the search folder changed"
    );
    assert_eq!(lock_entry(&run, "search").unwrap(), search_entry);
    assert_ne!(
        std::fs::read(run.join("retrain/last.safetensors")).unwrap(),
        old_weights
    );
    // The first retraining is kept under stale/, with its lock entry.
    let key = old_retrain["key"].as_str().unwrap();
    let kept = run.join(format!("stale/retrain-{}", &key[..12]));
    assert_eq!(
        std::fs::read(kept.join("retrain/last.safetensors")).unwrap(),
        old_weights
    );
    assert!(kept.join("entry.json").exists());

    // Undoing the edit restores the first retraining instead of computing it again.
    let p = staged_pipeline(&dir, "e", "0.05");
    let third = run_ok(&mut run_cmd(&p, &out));
    assert_eq!(action_of(&third, "search"), "cached", "{third}");
    assert!(
        action_of(&third, "retrain").starts_with("restored from"),
        "{third}"
    );
    assert_eq!(
        std::fs::read(run.join("retrain/last.safetensors")).unwrap(),
        old_weights
    );
    assert_eq!(
        lock_entry(&run, "retrain").unwrap()["key"],
        old_retrain["key"]
    );
    let st = run_ok(bin().args(["status"]).arg(&p).arg("--out").arg(&out));
    for stage in ["search", "derive", "retrain", "export", "report"] {
        assert_eq!(state_of(&st, stage), "done", "{st}");
    }

    // --only reruns one stage; --from a stage and the rest; --force everything.
    let o = run_ok(run_cmd(&p, &out).args(["--only", "export"]));
    assert!(action_of(&o, "export").starts_with("ran in"), "{o}");
    assert_eq!(action_of(&o, "retrain"), "not selected", "{o}");
    assert_eq!(action_of(&o, "report"), "not selected", "{o}");
    let o = run_ok(run_cmd(&p, &out).args(["--from", "export"]));
    assert_eq!(action_of(&o, "retrain"), "not selected", "{o}");
    assert!(action_of(&o, "export").starts_with("ran in"), "{o}");
    assert!(action_of(&o, "report").starts_with("ran in"), "{o}");

    // A deleted output makes its stage (and only it) run again.
    std::fs::remove_file(run.join("model.onnx")).unwrap();
    let st = run_ok(bin().args(["status"]).arg(&p).arg("--out").arg(&out));
    assert!(st.contains("output model.onnx is missing"), "{st}");
    let o = run_ok(&mut run_cmd(&p, &out));
    assert_eq!(action_of(&o, "retrain"), "cached", "{o}");
    assert!(action_of(&o, "export").starts_with("ran in"), "{o}");
}

/// `nas-pipe run` refuses, with exit code 2 and nothing run, what it cannot do.
#[test]
fn run_bad_input_is_a_clean_error() {
    let dir = tempdir("run-bad");
    let out = dir.join("out");
    // A stage that needs the exported model without an export section: points at it.
    let p = dir.join("v.ron");
    let text = std::fs::read_to_string(staged_pipeline(&dir, "v", "0.05"))
        .unwrap()
        .replace("export: Onnx(),", "validate: Validate(samples: 8),");
    std::fs::write(&p, text).unwrap();
    let err = fails(&mut run_cmd(&p, &out));
    assert!(
        err.contains("v.ron:17:15: the validate stage needs the exported model"),
        "{err}"
    );
    assert!(!out.join("v").exists());

    let p = staged_pipeline(&dir, "b", "0.05");
    let err = fails(run_cmd(&p, &out).args(["--only", "profile"]));
    assert!(
        err.contains(
            "has no profile stage; its stages are search, derive, retrain, export, report"
        ),
        "{err}"
    );
    let err = fails(run_cmd(&p, &out).args(["--only", "export"]));
    assert!(
        err.contains(
            "search is missing (not run yet), and the stages --only selects need its outputs"
        ),
        "{err}"
    );
    assert!(!out.join("b").exists());
    let err = fails(run_cmd(&p, &out).args(["--only", "nope"]));
    assert!(err.contains("invalid value 'nope'"), "{err}");

    // A lock file of another schema version is refused and left as it was.
    let run = out.join("b");
    std::fs::create_dir_all(&run).unwrap();
    let foreign = r#"{"schema_version": 99, "stages": []}"#;
    std::fs::write(run.join("nas-pipe.lock"), foreign).unwrap();
    let err = fails(&mut run_cmd(&p, &out));
    assert!(
        err.contains("lock file schema version 99 is not the 1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("nas-pipe.lock")).unwrap(),
        foreign
    );
    let err = fails(bin().arg("status").arg(&p).arg("--out").arg(&out));
    assert!(err.contains("schema version 99"), "{err}");
}

/// `pipelines/smoke.ron` end to end with ONNX Runtime: every stage runs, the second run is
/// a full cache hit, and status calls every stage done.
#[test]
fn smoke_pipeline_runs_end_to_end_then_hits_the_cache() {
    if ort_runtime("smoke_pipeline_runs_end_to_end_then_hits_the_cache").is_none() {
        return;
    }
    let dir = tempdir("run-smoke");
    let p = root().join("pipelines/smoke.ron");
    let t0 = std::time::Instant::now();
    let first = run_ok(&mut run_cmd(&p, &dir));
    let first_secs = t0.elapsed().as_secs_f64();
    for stage in [
        "search", "derive", "retrain", "export", "validate", "profile", "report",
    ] {
        assert!(action_of(&first, stage).starts_with("ran in"), "{first}");
    }
    assert!(first.contains("validation passed"), "{first}");
    let run = dir.join("smoke");
    let before = tree(&run);
    let t0 = std::time::Instant::now();
    let second = run_ok(&mut run_cmd(&p, &dir));
    let second_secs = t0.elapsed().as_secs_f64();
    for stage in [
        "search", "derive", "retrain", "export", "validate", "profile", "report",
    ] {
        assert_eq!(action_of(&second, stage), "cached", "{second}");
    }
    // Nothing but the busy file's holder line changed.
    let strip = |t: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        t.into_iter()
            .filter(|(f, _)| f != ".nas-pipe.busy")
            .collect()
    };
    assert!(
        strip(tree(&run)) == strip(before),
        "a cached run changed files"
    );
    let st = run_ok(bin().arg("status").arg(&p).arg("--out").arg(&dir));
    assert_eq!(st.matches(" done ").count(), 7, "{st}");
    let resolved = std::fs::read_to_string(run.join("pipeline.ron")).unwrap();
    assert!(resolved.contains("name: \"smoke\""), "{resolved}");
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("smoke: first run {first_secs:.1}s, cached run {second_secs:.2}s\n"),
    );
}

/// A pipeline that fixes its architecture has no search: derive writes its genotype, and
/// the stages after it run as usual.
#[test]
fn a_fixed_genotype_skips_the_search() {
    let dir = tempdir("run-fixed");
    let p = dir.join("f.ron");
    let text = std::fs::read_to_string(staged_pipeline(&dir, "f", "0.05")).unwrap();
    let start = text.find("    search: Darts(").unwrap();
    let end = text.find("    retrain: Retrain(").unwrap();
    let text = format!(
        "{}    genotype: \"DARTS_V2\",\n{}",
        &text[..start],
        &text[end..]
    )
    .replace("epochs: 8,", "epochs: 1,");
    std::fs::write(&p, text).unwrap();
    let out = run_ok(&mut run_cmd(&p, &dir));
    let stages: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(stages, ["derive", "retrain", "export", "report"], "{out}");
    let run = dir.join("f");
    assert!(!run.join("search").exists());
    let mut sources = Sources::default();
    let resolved = nas_pipe::pipeline::resolve::load(&mut sources, &p).unwrap();
    let (g, _) = resolved.genotype.unwrap();
    assert_eq!(
        std::fs::read_to_string(run.join("genotype.ron")).unwrap(),
        g.to_ron()
    );
    assert!(lock_entry(&run, "search").is_none());
    assert_eq!(lock_entry(&run, "derive").unwrap()["status"], "done");
}

/// `nas-pipe report RUN_DIR` rebuilds the report from the run folder alone, byte for byte,
/// and the lock still counts the report stage done.
#[test]
fn report_command_rebuilds_the_report_from_the_run_folder() {
    let dir = tempdir("run-report");
    let p = staged_pipeline(&dir, "r", "0.05");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("epochs: 4,", "epochs: 1,")
        .replace("epochs: 8,", "epochs: 1,");
    std::fs::write(&p, text).unwrap();
    run_ok(&mut run_cmd(&p, &dir));
    let run = dir.join("r");
    let files = ["report.html", "report.md", "summary.json"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    for f in files {
        std::fs::remove_file(run.join(f)).unwrap();
    }
    let out = run_ok(bin().arg("report").arg(&run));
    assert!(out.contains("report.html"), "{out}");
    for (f, b) in files.iter().zip(&before) {
        assert!(&std::fs::read(run.join(f)).unwrap() == b, "{f} differs");
    }
    // The same through the pipeline file.
    std::fs::remove_file(run.join("report.html")).unwrap();
    run_ok(bin().arg("report").arg(&p).arg("--out").arg(&dir));
    assert!(std::fs::read(run.join("report.html")).unwrap() == before[0]);
    let st = run_ok(bin().arg("status").arg(&p).arg("--out").arg(&dir));
    assert!(
        st.lines()
            .any(|l| l.trim_start().starts_with("report    done")),
        "{st}"
    );
    let err = fails(bin().arg("report").arg(dir.join("nope")));
    assert!(err.contains("nope"), "{err}");
}

/// A validation that misses its tolerance fails the run with exit code 1, after profiling
/// and reporting; the cached second run says so again.
#[test]
fn run_exits_1_when_validation_fails_and_still_reports() {
    if ort_runtime("run_exits_1_when_validation_fails_and_still_reports").is_none() {
        return;
    }
    let dir = tempdir("run-validation-fails");
    let text = std::fs::read_to_string(root().join("pipelines/smoke.ron"))
        .unwrap()
        .replace("name: \"smoke\"", "name: \"strict\"")
        .replace(
            "validate: Validate(samples: 32)",
            "validate: Validate(samples: 32, max_abs_diff: 0.0, min_top1_agreement: 1.0)",
        )
        .replace(
            "\"../schemas/darts.ron\"",
            &format!(
                "{:?}",
                root().join("schemas/darts.ron").display().to_string()
            ),
        );
    let p = dir.join("strict.ron");
    std::fs::write(&p, text).unwrap();
    for _ in 0..2 {
        let o = run_cmd(&p, &dir).output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("validation FAILED: largest logit difference "),
            "{stdout}"
        );
        assert!(!action_of(&stdout, "report").is_empty());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("strict/validation.json")).unwrap())
            .unwrap();
    assert_eq!(v["passed"], false);
    assert!(v["max_abs_diff"].as_f64().unwrap() > 0.0, "{v}");
    let html = std::fs::read_to_string(dir.join("strict/report.html")).unwrap();
    assert!(html.contains("FAILED"));
    assert!(dir.join("strict/profile.json").exists());
}

/// [`staged_pipeline`] with a wall-clock budget.
fn budget_pipeline(dir: &Path, name: &str, total: &str) -> PathBuf {
    let p = staged_pipeline(dir, name, "0.05");
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text.replacen(
        "    export: Onnx(),",
        &format!("    export: Onnx(),\n    budget: Budget(total: \"{total}\"),"),
        1,
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Issue #23: a budget plans the search's and retraining's epochs and images from
/// throughput measured on this machine and says the plan before anything runs; a killed
/// and resumed run keeps the plan it started with; retraining's part is made final once,
/// on the derived network; the run folder records the planned values, the report plan and
/// actual; a finished run is cached with its plan; a new budget sets the old plan aside.
#[test]
fn a_budget_plans_the_run_and_a_resumed_run_keeps_its_plan() {
    let dir = tempdir("run-budget");
    let p = budget_pipeline(&dir, "budgeted", "20s");
    let out = dir.join("out");
    let run = out.join("budgeted");

    kill_during(&p, &out, &run, "search", "search/state.json");
    let first = json_of(&run.join("plan.json"));
    assert_eq!(first["total_s"], 20.0, "{first}");
    assert_eq!(first["retrain"]["measured"], false, "{first}");
    assert!(first["search"]["images"].as_u64().unwrap() >= 32, "{first}");

    let o = bin()
        .arg("run")
        .arg(&p)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}{stderr}");
    // The plan is said before anything runs, and not measured again on resume.
    assert!(stderr.contains("budget 20.0s: planned"), "{stderr}");
    assert!(
        !stderr.contains("measuring this machine's throughput"),
        "{stderr}"
    );
    assert!(
        stderr.contains("retraining measured on the derived network"),
        "{stderr}"
    );
    let plan = json_of(&run.join("plan.json"));
    assert_eq!(plan["search"], first["search"]);
    assert_eq!(plan["basis"], first["basis"]);
    assert_eq!(plan["retrain"]["measured"], true, "{plan}");
    assert!(plan["blake3"].is_string());

    // What ran is what was planned.
    let search_epochs = plan["search"]["epochs"].as_u64().unwrap();
    assert_eq!(
        epochs_done(&run.join("search/state.json")) as u64,
        search_epochs
    );
    let retrain_epochs = plan["retrain"]["epochs"].as_u64().unwrap();
    let metrics = json_of(&run.join("retrain/metrics.json"));
    // Paced to the time left, retraining may have run more epochs than planned.
    let ran = metrics.as_array().unwrap();
    assert!(ran.len() as u64 >= retrain_epochs, "{metrics}");
    assert_eq!(ran[0]["epochs"].as_u64(), Some(retrain_epochs));
    assert_eq!(
        ran.last().unwrap()["epochs"].as_u64(),
        Some(ran.len() as u64)
    );
    let spec = std::fs::read_to_string(run.join("pipeline.ron")).unwrap();
    let images = plan["retrain"]["images"].as_u64().unwrap();
    // The first epoch trained on its planned images: batches of 16.
    let steps = metrics[0]["curve"].as_array().unwrap().last().unwrap()["step"].clone();
    assert_eq!(
        steps.as_u64().unwrap(),
        images.div_ceil(16),
        "{}",
        metrics[0]
    );
    let retrain_part = &spec[spec.find("retrain: Retrain(").unwrap()..];
    assert!(
        retrain_part.contains(&format!("images: {images},")),
        "{spec}"
    );

    let summary = json_of(&run.join("summary.json"));
    let b = &summary["budget"];
    assert_eq!(b["total_s"], 20.0, "{b}");
    assert_eq!(b["search"]["epochs"], plan["search"]["epochs"]);
    assert_eq!(b["retrain"]["images"], plan["retrain"]["images"]);
    assert!(b["actual_s"].as_f64().is_some_and(|s| s > 0.0), "{b}");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("**Budget: plan and actual**"), "{md}");
    assert!(md.contains("of its 20.0 s budget"), "{md}");

    // Again: every stage cached under the plan, the plan untouched.
    let bytes = std::fs::read(run.join("plan.json")).unwrap();
    let again = run_ok(&mut run_cmd(&p, &out));
    for stage in ["search", "derive", "retrain", "export", "report"] {
        assert_eq!(action_of(&again, stage), "cached", "{again}");
    }
    assert_eq!(std::fs::read(run.join("plan.json")).unwrap(), bytes);
    let st = run_ok(bin().args(["status"]).arg(&p).arg("--out").arg(&out));
    assert!(!st.contains("stale") && !st.contains("will run"), "{st}");

    // Another budget: planned anew, the old plan kept in stale/.
    run_ok(run_cmd(&p, &out).args(["--budget", "25s", "--only", "search"]));
    let replanned = json_of(&run.join("plan.json"));
    assert_eq!(replanned["total_s"], 25.0);
    let kept: Vec<_> = std::fs::read_dir(run.join("stale"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("plan-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(kept[0].path().join("plan.json")).unwrap(),
        bytes
    );
}

/// A budget that is not a duration, or out of range, or on a pipeline it cannot plan, is
/// refused before anything runs, pointing at the value or naming `--budget`.
#[test]
fn a_bad_budget_is_refused_with_the_way_out() {
    let dir = tempdir("run-budget-bad");
    let p = budget_pipeline(&dir, "b", "2 fortnights");
    let err = fails(bin().arg("check").arg(&p));
    assert!(
        err.contains("b.ron:18:") && err.contains("is not a duration"),
        "{err}"
    );
    let p = budget_pipeline(&dir, "c", "3s");
    let err = fails(bin().arg("check").arg(&p));
    assert!(err.contains("between 10 seconds"), "{err}");
    let p = staged_pipeline(&dir, "d", "0.05");
    let err = fails(run_cmd(&p, &dir.join("out")).args(["--budget", "soon"]));
    assert!(
        err.contains("--budget: budget \"soon\" is not a duration"),
        "{err}"
    );
    assert!(!dir.join("out").exists());
    let ok = run_ok(bin().arg("check").arg(budget_pipeline(&dir, "e", "1h 30m")));
    assert!(ok.contains("budget: 1h 30m"), "{ok}");
}
