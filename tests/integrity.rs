//! Damaged and hand-edited run folders: every file a run replaces is kept in `stale/`,
//! every reader refuses a file that is not what its stage wrote (exit 2, naming the file
//! and the way out), a damaged checkpoint falls back to the one before it, and each dead
//! end's advice, followed, works.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A pipeline with search, derive, retrain (`epochs` epochs) and export on a tiny synthetic
/// set: a whole run takes seconds.
fn pipeline(dir: &Path, name: &str, epochs: u32) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 1,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 64, test: 32),
    space: "{}",
    search: Darts(
        order: First, epochs: 1, batch_size: 16, channels: 4, layers: 3,
        weights: Sgd(lr: 0.025, lr_min: 0.001, weight_decay: 3e-4, grad_clip: 5.0),
        arch: Adam(lr: 3e-4, betas: (0.5, 0.999), weight_decay: 1e-3),
    ),
    retrain: Retrain(
        channels: 4, layers: 3, epochs: {epochs}, batch_size: 16,
        optimizer: Sgd(lr: 0.025, weight_decay: 3e-4, grad_clip: 5.0),
    ),
    export: Onnx(),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join(format!("{name}.ron"));
    std::fs::write(&path, text).unwrap();
    path
}

fn cmd(what: &str, p: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg(what).arg(p).arg("--out").arg(out);
    c
}

/// Runs `c` to success; returns its stderr.
fn ok_err(c: &mut Command) -> String {
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{}{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

/// Flips one bit of the file's last byte (inside the last tensor of a safetensors file, or
/// the last initializer of an ONNX model); returns the damaged bytes.
fn flip(path: &Path) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    *b.last_mut().unwrap() ^= 0x40;
    std::fs::write(path, &b).unwrap();
    b
}

/// The one folder under `stale/` whose name starts with `prefix`.
fn stale_folder(run: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(run.join("stale"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// How many folders `stale/` holds.
fn stale_count(run: &Path) -> usize {
    std::fs::read_dir(run.join("stale")).map_or(0, |rd| rd.count())
}

fn set_lock_status(run: &Path, stage: &str, status: &str) {
    let path = run.join("nas-pipe.lock");
    let mut lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for e in lock["stages"].as_array_mut().unwrap() {
        if e["stage"] == stage {
            e["status"] = status.into();
            e["finished"] = serde_json::Value::Null;
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
}

/// A hand-edited `genotype.ron` and a damaged `model.onnx` are set aside in `stale/` with
/// their changed bytes when the next run writes them again, and the run says so.
#[test]
fn run_keeps_hand_edited_and_damaged_outputs_in_stale() {
    let dir = tempdir("integrity-stale");
    let p = pipeline(&dir, "s", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let run = dir.join("s");
    let genotype = std::fs::read(run.join("genotype.ron")).unwrap();
    let mut edited = genotype.clone();
    edited.extend_from_slice(b"// edited by hand\n");
    std::fs::write(run.join("genotype.ron"), &edited).unwrap();
    let onnx = std::fs::read(run.join("model.onnx")).unwrap();
    let damaged = flip(&run.join("model.onnx"));

    let err = ok_err(&mut cmd("run", &p, &dir));
    assert!(
        err.contains("output genotype.ron changed after the stage wrote it"),
        "{err}"
    );
    assert!(err.contains("the previous outputs are kept in"), "{err}");
    let kept = stale_folder(&run, "derive-");
    assert_eq!(std::fs::read(kept.join("genotype.ron")).unwrap(), edited);
    let kept = stale_folder(&run, "export-");
    assert_eq!(std::fs::read(kept.join("model.onnx")).unwrap(), damaged);
    // Both came out as they were before the damage.
    assert_eq!(std::fs::read(run.join("genotype.ron")).unwrap(), genotype);
    assert_eq!(std::fs::read(run.join("model.onnx")).unwrap(), onnx);
}

/// `train` reads the derived `genotype.ron` only as the derive stage wrote it: a hand-edited
/// one is refused (exit 2) with the ways out, and `--genotype FILE` trains it on purpose.
#[test]
fn train_refuses_a_hand_edited_genotype_unless_given_explicitly() {
    let dir = tempdir("integrity-genotype");
    let p = pipeline(&dir, "g", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let g = dir.join("g/genotype.ron");
    let mut edited = std::fs::read(&g).unwrap();
    edited.extend_from_slice(b"// edited by hand\n");
    std::fs::write(&g, &edited).unwrap();
    let err = fails(&mut cmd("train", &p, &dir));
    assert!(
        err.contains("genotype.ron changed since the derive stage wrote it"),
        "{err}"
    );
    assert!(err.contains("`--genotype FILE`"), "{err}");
    let mine = dir.join("mine.ron");
    std::fs::write(&mine, &edited).unwrap();
    ok_err(cmd("train", &p, &dir).arg("--genotype").arg(&mine));
    assert_eq!(
        std::fs::read(&g).unwrap(),
        edited,
        "the edited file was touched"
    );
}

/// One flipped exponent bit in `retrain/last.safetensors`: `eval` and `export` refuse it
/// (exit 2) naming the file and the way out, `model.onnx` is left as it was, and the
/// advice, `run --from retrain`, recomputes the weights and keeps the damaged file.
#[test]
fn damaged_weights_are_refused_by_every_reader_until_recomputed() {
    let dir = tempdir("integrity-weights");
    let p = pipeline(&dir, "w", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let run = dir.join("w");
    let last = run.join("retrain/last.safetensors");
    let good = std::fs::read(&last).unwrap();
    let onnx = std::fs::read(run.join("model.onnx")).unwrap();
    let damaged = flip(&last);

    for what in ["eval", "export"] {
        let err = fails(&mut cmd(what, &p, &dir));
        assert!(
            err.contains("retrain/last.safetensors changed since the retrain stage wrote it"),
            "{what}: {err}"
        );
        assert!(err.contains("--from retrain"), "{what}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read(run.join("model.onnx")).unwrap(), onnx);
    assert_eq!(stale_count(&run), 0);

    ok_err(cmd("run", &p, &dir).args(["--from", "retrain"]));
    assert_eq!(std::fs::read(&last).unwrap(), good);
    let kept = stale_folder(&run, "retrain-");
    assert_eq!(
        std::fs::read(kept.join("retrain/last.safetensors")).unwrap(),
        damaged
    );
    run_ok(&mut cmd("eval", &p, &dir));
}

/// `nas-pipe export` replacing a `model.onnx` that differs keeps the old one in `stale/`,
/// and the lock stops vouching for the new one (the next run exports again).
#[test]
fn a_single_stage_command_keeps_what_it_replaces() {
    let dir = tempdir("integrity-replace");
    let p = pipeline(&dir, "r", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let run = dir.join("r");
    // The same bytes again: nothing to keep, and the lock still counts export done.
    ok_err(&mut cmd("export", &p, &dir));
    assert_eq!(stale_count(&run), 0);
    let st = run_ok(&mut cmd("status", &p, &dir));
    assert!(
        st.lines()
            .any(|l| l.trim_start().starts_with("export    done")),
        "{st}"
    );
    let onnx = std::fs::read(run.join("model.onnx")).unwrap();
    std::fs::write(run.join("model.onnx"), b"not a model").unwrap();
    let err = ok_err(&mut cmd("export", &p, &dir));
    assert!(
        err.contains("the previous export outputs are kept in"),
        "{err}"
    );
    let kept = stale_folder(&run, "export-replaced");
    assert_eq!(
        std::fs::read(kept.join("model.onnx")).unwrap(),
        b"not a model"
    );
    assert_eq!(std::fs::read(run.join("model.onnx")).unwrap(), onnx);
}

/// A damaged newest checkpoint falls back, with a warning, to the one kept before it, is
/// kept in `stale/damaged-…/` (redoing its epoch does not overwrite it), and the training
/// ends with the same weights as an undisturbed one; with no earlier checkpoint the error
/// names the file and how to start over, and nothing is moved.
#[test]
fn a_damaged_checkpoint_falls_back_to_the_one_before_it() {
    let dir = tempdir("integrity-checkpoint");
    let p = train_pipeline(&dir, "c", 8, "");
    let (straight, broken) = (dir.join("straight"), dir.join("broken"));
    let train = |out: &Path| {
        let mut c = cmd("train", &p, out);
        c.args(["--genotype", "DARTS_V2"]);
        c
    };
    run_ok(&mut train(&straight));
    run_ok(train(&broken).args(["--stop-after", "2"]));
    let rdir = broken.join("c/retrain");
    assert!(rdir.join("checkpoint-1.safetensors").exists());
    let damaged = flip(&rdir.join("checkpoint-2.safetensors"));
    let err = ok_err(&mut train(&broken));
    assert!(err.contains("warning:"), "{err}");
    assert!(
        err.contains("checkpoint-2.safetensors changed since it was written"),
        "{err}"
    );
    assert!(
        err.contains("checkpoint-1.safetensors (after epoch 1) instead"),
        "{err}"
    );
    let kept = stale_folder(&broken.join("c"), "damaged-checkpoint-2")
        .join("retrain/checkpoint-2.safetensors");
    assert!(
        err.contains(&format!("(kept in {})", kept.display())),
        "{err}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), damaged);
    for f in ["last.safetensors", "best.safetensors"] {
        let a = std::fs::read(straight.join("c/retrain").join(f)).unwrap();
        let b = std::fs::read(rdir.join(f)).unwrap();
        assert!(a == b, "{f} differs from the undisturbed training");
    }

    // Weights `nas-pipe train` wrote are checked against its state file (no lock here).
    let last = straight.join("c/retrain/last.safetensors");
    flip(&last);
    for what in ["eval", "export"] {
        let err = fails(&mut cmd(what, &p, &straight));
        assert!(
            err.contains("last.safetensors changed since the training wrote it"),
            "{err}"
        );
        assert!(err.contains("--from retrain"), "{err}");
    }
    assert!(!straight.join("c/model.onnx").exists());

    let alone = dir.join("alone");
    run_ok(train(&alone).args(["--stop-after", "1"]));
    let c1 = alone.join("c/retrain/checkpoint-1.safetensors");
    let bytes = std::fs::read(&c1).unwrap();
    std::fs::write(&c1, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&mut train(&alone));
    assert!(
        err.contains("no sound checkpoint is left to resume from"),
        "{err}"
    );
    assert!(
        err.contains("--from retrain") && err.contains("move that folder away"),
        "{err}"
    );
    assert_eq!(stale_count(&alone.join("c")), 0);
    assert_eq!(std::fs::read(&c1).unwrap(), &bytes[..bytes.len() / 2]);
}

/// A truncated newest search checkpoint: the search warns, keeps it in
/// `stale/damaged-…/`, resumes from the one before it and ends with the undisturbed
/// search's checkpoint.
#[test]
fn a_truncated_search_checkpoint_is_kept_and_passed_over() {
    let dir = tempdir("integrity-search-checkpoint");
    let p = pipeline(&dir, "s", 1);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("order: First, epochs: 1,", "order: First, epochs: 3,");
    std::fs::write(&p, text).unwrap();
    let (straight, broken) = (dir.join("straight"), dir.join("broken"));
    run_ok(&mut cmd("search", &p, &straight));
    run_ok(cmd("search", &p, &broken).args(["--stop-after", "2"]));
    let run = broken.join("s");
    let c2 = run.join("search/checkpoint-2.safetensors");
    let bytes = std::fs::read(&c2).unwrap();
    std::fs::write(&c2, &bytes[..bytes.len() - 7]).unwrap();
    let err = ok_err(&mut cmd("search", &p, &broken));
    let kept = stale_folder(&run, "damaged-checkpoint-2").join("search/checkpoint-2.safetensors");
    assert!(
        err.contains("warning:")
            && err.contains(&format!("(kept in {})", kept.display()))
            && err.contains("checkpoint-1.safetensors (after epoch 1) instead"),
        "{err}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), &bytes[..bytes.len() - 7]);
    let last = "search/checkpoint-3.safetensors";
    assert!(
        std::fs::read(straight.join("s").join(last)).unwrap()
            == std::fs::read(run.join(last)).unwrap(),
        "the resumed search differs from the undisturbed one"
    );
}

/// A run killed in the retraining whose only checkpoint was then truncated: `run` fails
/// with advice, and the advice (`--from retrain`) works and keeps the damaged checkpoint.
#[test]
fn a_truncated_checkpoint_of_a_killed_run_points_at_from() {
    let dir = tempdir("integrity-killed");
    let p = pipeline(&dir, "k", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let run = dir.join("k");
    set_lock_status(&run, "retrain", "running");
    let c1 = run.join("retrain/checkpoint-1.safetensors");
    let bytes = std::fs::read(&c1).unwrap();
    std::fs::write(&c1, &bytes[..100]).unwrap();
    for _ in 0..2 {
        let err = fails(&mut cmd("run", &p, &dir));
        assert!(err.contains("checkpoint-1.safetensors"), "{err}");
        // The advice names the pipeline file the command was given.
        assert!(
            err.contains(&format!("`nas-pipe run {} --from retrain`", p.display())),
            "{err}"
        );
    }
    ok_err(cmd("run", &p, &dir).args(["--from", "retrain"]));
    let kept = stale_folder(&run, "retrain-");
    assert_eq!(
        std::fs::read(kept.join("retrain/checkpoint-1.safetensors")).unwrap(),
        &bytes[..100]
    );
    run_ok(&mut cmd("eval", &p, &dir));
}

/// `search/state.json` claiming more epochs than the spec plans: `search` and `run` refuse
/// it (exit 2) with advice, and the advice (`run --from search`) works.
#[test]
fn a_search_state_with_more_epochs_than_the_spec_is_a_clear_dead_end() {
    let dir = tempdir("integrity-epochs");
    let p = pipeline(&dir, "e", 1);
    run_ok(&mut cmd("search", &p, &dir));
    let state = dir.join("e/search/state.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    v["epochs_done"] = 5.into();
    let edited = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::write(&state, &edited).unwrap();
    for what in ["search", "run"] {
        let err = fails(&mut cmd(what, &p, &dir));
        assert!(
            err.contains("records 5 epochs finished and the figures of 1, but the spec plans 1"),
            "{what}: {err}"
        );
        assert!(
            err.contains(&format!("`nas-pipe run {} --from search`", p.display())),
            "{err}"
        );
    }
    ok_err(cmd("run", &p, &dir).args(["--from", "search"]));
    let kept = stale_folder(&dir.join("e"), "search-");
    assert_eq!(
        std::fs::read(kept.join("search/state.json")).unwrap(),
        edited
    );
}

/// An empty or truncated lock file is refused with advice; `--force` keeps it in `stale/`
/// and runs every stage.
#[test]
fn a_damaged_lock_file_is_set_aside_with_force() {
    let dir = tempdir("integrity-lock");
    let p = pipeline(&dir, "l", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let run = dir.join("l");
    let lock = run.join("nas-pipe.lock");
    let bytes = std::fs::read(&lock).unwrap();
    for damaged in [Vec::new(), bytes[..bytes.len() / 2].to_vec()] {
        std::fs::write(&lock, &damaged).unwrap();
        for what in ["run", "status"] {
            let err = fails(&mut cmd(what, &p, &dir));
            assert!(err.contains("not a nas-pipe lock file"), "{err}");
            assert!(err.contains("--force"), "{err}");
        }
        let err = ok_err(cmd("run", &p, &dir).arg("--force"));
        assert!(err.contains("damaged; kept in"), "{err}");
        let kept = stale_folder(&run, "lock-damaged");
        assert_eq!(std::fs::read(kept.join("nas-pipe.lock")).unwrap(), damaged);
        std::fs::remove_dir_all(run.join("stale")).unwrap();
        run_ok(&mut cmd("status", &p, &dir));
    }
}

/// On a folder another process holds, `train` and `profile PIPELINE` say so (not that the
/// genotype or the model is missing), and `status` calls the running stage running.
#[test]
fn a_busy_folder_is_named_busy_and_its_stage_running() {
    let dir = tempdir("integrity-busy");
    let p = pipeline(&dir, "b", 1);
    let run = dir.join("b");
    std::fs::create_dir_all(&run).unwrap();
    let held = nas_pipe::run::busy::acquire(&run, "nas-pipe run b.ron").unwrap();
    for what in ["train", "profile"] {
        let err = fails(&mut cmd(what, &p, &dir));
        assert!(
            err.contains("is in use by `nas-pipe run b.ron`"),
            "{what}: {err}"
        );
    }
    drop(held);
    run_ok(&mut cmd("run", &p, &dir));
    set_lock_status(&run, "retrain", "running");
    let held = nas_pipe::run::busy::acquire(&run, "nas-pipe run b.ron").unwrap();
    let st = run_ok(&mut cmd("status", &p, &dir));
    let line = st
        .lines()
        .find(|l| l.trim_start().starts_with("retrain"))
        .unwrap();
    assert!(
        line.contains("running") && !line.contains("interrupted"),
        "{st}"
    );
    drop(held);
    let st = run_ok(&mut cmd("status", &p, &dir));
    assert!(st.contains("interrupted"), "{st}");
}

/// `Validate(samples: N)` with more samples than test images is an error that says how
/// many there are, from `check` on, before any stage runs.
#[test]
fn validating_more_samples_than_test_images_is_an_error() {
    let dir = tempdir("integrity-samples");
    let p = pipeline(&dir, "v", 1);
    run_ok(&mut cmd("run", &p, &dir));
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "export: Onnx(),",
        "export: Onnx(),\n    validate: Validate(samples: 100000),",
    );
    let v = dir.join("v2.ron");
    std::fs::write(&v, text).unwrap();
    for command in ["validate", "run"] {
        let err = fails(&mut cmd(command, &v, &dir));
        assert!(
            err.contains("v2.ron:")
                && err.contains("validation compares 100000 images, but the test set has 32"),
            "{err}"
        );
        assert!(err.contains("= help: set `samples: 32` or fewer"), "{err}");
    }
    let err = fails(bin().arg("check").arg(&v));
    assert!(err.contains("the test set has 32"), "{err}");
}
