//! Retraining the final network: its parameters, drop path and the auxiliary head,
//! resumed training, bad input.

use std::path::Path;

use nas_pipe::space::Overrides;
use nas_pipe::spec::space::Input;

use crate::common::*;

// ---- The final network (retraining) ----

/// The Candle model has exactly the parameters the space module counts, for every shipped
/// space; the auxiliary head adds exactly what `aux_param_count` says.
#[test]
fn final_network_parameters_match_the_space() {
    use nas_pipe::nets::model::{Model, aux_param_count};
    let dev = candle_core::Device::Cpu;
    let s = load_space("schemas/darts.ron", with_size(36, 20));
    let net = s.build(&arch(&s, "DARTS_V2"));
    let m = Model::new(&net, &dev, 0, false).unwrap();
    assert_eq!(m.store.param_count(), 3_349_342);
    let with_aux = Model::new(&net, &dev, 0, true).unwrap();
    assert_eq!(
        with_aux.store.param_count() as u64,
        3_349_342 + aux_param_count(&net)
    );
    assert_eq!(with_aux.param_count_without_aux(), 3_349_342);

    let nb = load_space("schemas/nas-bench-201.ron", Overrides::default());
    let net = nb.build(&arch(&nb, NB201_EXAMPLE));
    assert_eq!(
        Model::new(&net, &dev, 0, false)
            .unwrap()
            .store
            .param_count(),
        802_426
    );

    let ch = load_space("schemas/mobilenet-chain.ron", Overrides::default());
    let layers: Vec<&str> = std::iter::once("ir_k3_e1")
        .chain((0..4).flat_map(|_| ["ir_k3_e3", "ir_k5_e6", "skip", "ir_k3_e6"]))
        .collect();
    let a = chain_genotype(&ch, &layers);
    let net = ch.build(&a);
    let m = Model::new(&net, &dev, 0, false).unwrap();
    assert_eq!(m.store.param_count() as u64, ch.discrete_cost(&a).params);
    assert_eq!(m.store.param_count() as u64, net.cost().params);
}

/// Every shipped space's final network runs forward; drop path and the auxiliary head act
/// only in training mode, and evaluation is deterministic.
#[test]
fn drop_path_and_aux_head_only_in_training() {
    use nas_pipe::nets::model::{Mode, Model};
    use rand::SeedableRng;
    let dev = candle_core::Device::Cpu;
    let s = load_space("schemas/darts.ron", with_size(4, 5));
    let net = s.build(&arch(&s, "DARTS_V2"));
    let m = Model::new(&net, &dev, 1, true).unwrap();
    let x = candle_core::Tensor::randn(0f32, 1., (4, 3, 32, 32), &dev).unwrap();
    let v = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let e1 = m.forward(&x, Mode::Eval).unwrap();
    let e2 = m.forward(&x, Mode::Eval).unwrap();
    assert!(e1.aux.is_none());
    assert_eq!(e1.logits.dims(), &[4, 10]);
    assert_eq!(v(&e1.logits), v(&e2.logits), "evaluation is deterministic");

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let t1 = m
        .forward(
            &x,
            Mode::Train {
                drop_path: 0.5,
                rng: &mut rng,
            },
        )
        .unwrap();
    let aux = t1.aux.expect("training mode computes the auxiliary logits");
    assert_eq!(aux.dims(), &[4, 10]);
    let t2 = m
        .forward(
            &x,
            Mode::Train {
                drop_path: 0.5,
                rng: &mut rng,
            },
        )
        .unwrap();
    assert_ne!(v(&t1.logits), v(&t2.logits), "drop path draws new masks");
    // The same masks give the same output (training is reproducible from the seed).
    let (mut r1, mut r2) = (
        rand_chacha::ChaCha8Rng::seed_from_u64(9),
        rand_chacha::ChaCha8Rng::seed_from_u64(9),
    );
    let a = m
        .forward(
            &x,
            Mode::Train {
                drop_path: 0.3,
                rng: &mut r1,
            },
        )
        .unwrap();
    let b = m
        .forward(
            &x,
            Mode::Train {
                drop_path: 0.3,
                rng: &mut r2,
            },
        )
        .unwrap();
    // BN batch statistics do not depend on the running ones, so these match exactly.
    assert_eq!(v(&a.logits), v(&b.logits));

    for (file, g) in [
        ("schemas/nas-bench-201.ron", NB201_EXAMPLE),
        (
            "schemas/nas-bench-201.ron",
            "|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
        ),
    ] {
        let s = load_space(file, Overrides::default());
        let net = s.build(&arch(&s, g));
        let m = Model::new(&net, &dev, 1, false).unwrap();
        let y = m.forward(&x, Mode::Eval).unwrap();
        assert_eq!(y.logits.dims(), &[4, 10], "{g}");
    }
}

/// Training fuses each op's final BN into its node's sum (and reorders a node's two terms
/// for it); the probe mode runs every BN on its own. Without drop path both use batch
/// statistics, so logits and every parameter's gradient must agree bit for bit.
#[test]
fn fused_training_step_equals_the_unfused_one() {
    use nas_pipe::nets::model::{Mode, Model};
    use rand::SeedableRng;
    let dev = candle_core::Device::Cpu;
    for g in ["DARTS_V2", "DARTS_V1"] {
        let s = load_space("schemas/darts.ron", with_size(4, 5));
        let m = Model::new(&s.build(&arch(&s, g)), &dev, 3, false).unwrap();
        let x = candle_core::Tensor::randn(0f32, 1., (4, 3, 32, 32), &dev).unwrap();
        let step = |mode| {
            let logits = m.forward(&x, mode).unwrap().logits;
            let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let v = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut out = vec![("logits".to_string(), v(&logits))];
            for (name, p) in m.store.params() {
                out.push((
                    name,
                    v(grads
                        .get(p.as_tensor())
                        .expect("every parameter has a gradient")),
                ));
            }
            out
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let fused = step(Mode::Train {
            drop_path: 0.0,
            rng: &mut rng,
        });
        let plain = step(Mode::Probe {
            batch_stats: true,
            relus: None,
        });
        assert!(fused.len() > 100, "{g}: {} tensors", fused.len());
        for ((name, a), (_, b)) in fused.iter().zip(&plain) {
            assert_eq!(a, b, "{g}: {name}");
        }
    }
}

/// A network whose last reduction is not 8×8 cannot take DARTS's auxiliary head.
#[test]
fn aux_head_needs_an_8x8_map() {
    use nas_pipe::nets::model::aux_position;
    let mut ov = with_size(4, 8);
    ov.input = Some(Input {
        channels: 1,
        size: 28,
        classes: 10,
    });
    let s = load_space("schemas/darts.ron", ov);
    let e = aux_position(&s.build(&arch(&s, "DARTS_V2"))).unwrap_err();
    assert!(e.contains("7x7"), "{e}");
    let nb = load_space("schemas/nas-bench-201.ron", Overrides::default());
    let e = aux_position(&nb.build(&arch(&nb, NB201_EXAMPLE))).unwrap_err();
    assert!(e.contains("no reduction cell"), "{e}");
}

fn weights_of(path: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A training stopped after an epoch and resumed ends with the same weights, metrics and
/// evaluation as an uninterrupted one (drop path, label smoothing, augmentation and
/// warm-up on).
#[test]
fn resumed_training_equals_uninterrupted() {
    let dir = tempdir("train-resume");
    let p = train_pipeline(&dir, "t", 8, "drop_path: 0.3, label_smoothing: 0.1,");
    let train = |out: &str, stop: Option<&str>| {
        let mut c = bin();
        c.args(["train"])
            .arg(&p)
            .args(["--genotype", "DARTS_V2", "--out"])
            .arg(dir.join(out));
        if let Some(s) = stop {
            c.args(["--stop-after", s]);
        }
        run_ok(&mut c)
    };
    let done = train("straight", None);
    assert!(done.contains("training finished: 3 epochs"), "{done}");
    let stopped = train("resumed", Some("1"));
    assert!(stopped.contains("stopped after epoch 1"), "{stopped}");
    assert!(!dir.join("resumed/t/retrain/evaluation.json").exists());
    train("resumed", None);
    let (a, b) = (
        dir.join("straight/t/retrain"),
        dir.join("resumed/t/retrain"),
    );
    let wa = weights_of(&a.join("last.safetensors"));
    assert!(wa.iter().any(|(k, _)| k.ends_with("running_var")));
    assert!(
        wa.iter()
            .any(|(k, _)| k == "layers.1.edges.0.sep_conv_3x3.1.dw.weight")
    );
    assert_eq!(wa, weights_of(&b.join("last.safetensors")));
    let json = |d: &Path, f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join(f)).unwrap()).unwrap()
    };
    let strip_time = |mut v: serde_json::Value| {
        for m in v.as_array_mut().unwrap() {
            m["seconds"] = 0.into();
            m["images_per_sec"] = 0.into();
            m["eval_seconds"] = 0.into();
        }
        v
    };
    let ma = strip_time(json(&a, "metrics.json"));
    assert_eq!(ma, strip_time(json(&b, "metrics.json")));
    assert_eq!(json(&a, "evaluation.json"), json(&b, "evaluation.json"));
    // Drop path ramps 0, 0.1, 0.2; the learning rate warms up then decays to the floor.
    let drops: Vec<f64> = ma
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["drop_path"].as_f64().unwrap())
        .collect();
    for (d, want) in drops.iter().zip([0.0, 0.1, 0.2]) {
        assert!((d - want).abs() < 1e-12, "{drops:?}");
    }
    assert_eq!(drops.len(), 3);
    let eval = json(&a, "evaluation.json");
    let confusion = eval["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 4);
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 24);

    // `eval` rebuilds the model from the run folder alone and agrees with training.
    let out = run_ok(
        bin()
            .args(["eval"])
            .arg(&p)
            .arg("--out")
            .arg(dir.join("straight")),
    );
    let acc = eval["accuracy"].as_f64().unwrap();
    assert!(
        out.contains(&format!("test accuracy {:.2}%", 100.0 * acc)),
        "{out} vs {acc}"
    );
    // Its help promises the confusion matrix: it prints it, a row per true class.
    let matrix = out
        .split_once("confusion matrix (rows: true class, columns: predicted)\n")
        .unwrap_or_else(|| panic!("{out}"))
        .1;
    assert_eq!(
        matrix.lines().count(),
        1 + eval["classes"].as_array().unwrap().len(),
        "{out}"
    );
    // The model card, space and genotype beside the weights rebuild the same network.
    let t = nas_pipe::run::retrain::load_model(&a).unwrap();
    assert_eq!(t.net.cost().params, t.card.params);
    let m = nas_pipe::nets::model::Model::new(&t.net, &candle_core::Device::Cpu, 0, false).unwrap();
    nas_pipe::run::retrain::load_weights(&m, &a.join("best.safetensors")).unwrap();

    // A changed spec or genotype is refused, and the finished results are left untouched.
    let files = [
        "state.json",
        "genotype.ron",
        "model.ron",
        "last.safetensors",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(a.join(f)).unwrap())
        .collect();
    std::fs::create_dir_all(dir.join("changed")).unwrap();
    let p2 = train_pipeline(&dir.join("changed"), "t", 8, "drop_path: 0.2,");
    for (pipeline, genotype) in [(&p2, "DARTS_V2"), (&p, "DARTS_V1")] {
        let o = bin()
            .args(["train"])
            .arg(pipeline)
            .args(["--genotype", genotype, "--out"])
            .arg(dir.join("straight"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("different spec"));
        let after: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(a.join(f)).unwrap())
            .collect();
        assert!(before == after, "{genotype}: the finished run was modified");
    }
}

/// `best.safetensors` is the epoch with the highest validation accuracy (the first of
/// equals), never chosen on the test part; metrics.json records validation figures only,
/// and the test part is evaluated once, on `last.safetensors`, after the last epoch.
#[test]
fn best_is_selected_on_validation_not_test() {
    let dir = tempdir("train-best-val");
    let p = train_pipeline(&dir, "v", 8, "epochs: 4,");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("epochs: 3, ", "")
        // Enough validation images (about 10 per class) for accuracies that differ by epoch.
        .replace("train: 40,", "train: 200,")
        // Seed 4 reaches its best validation accuracy before the last epoch.
        .replace("seed: 5,", "seed: 4,\n    split: (validation: 0.2),");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("o");
    let retrain = out.join("v/retrain");
    // A test evaluation left from another training is not taken for this one's.
    std::fs::create_dir_all(&retrain).unwrap();
    let stale = serde_json::json!({
        "weights": "last.safetensors", "images": 24, "loss": 1.0, "accuracy": 0.5,
        "classes": ["0", "1", "2", "3"], "confusion": vec![[0, 0, 0, 0]; 4],
        "per_class_accuracy": [0.5, 0.5, 0.5, 0.5],
    });
    std::fs::write(retrain.join("evaluation.json"), stale.to_string()).unwrap();
    // The weights after each epoch, one resumed run at a time.
    let mut after = Vec::new();
    for epoch in 1..=4 {
        let o = bin()
            .args(["train"])
            .arg(&p)
            .args(["--genotype", "DARTS_V2", "--stop-after", &epoch.to_string()])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        // Each epoch reports validation figures; only the end of the last reports test ones.
        assert!(log.contains(&format!("retrain epoch {epoch}/4")), "{log}");
        assert!(log.contains("val loss"), "{log}");
        assert_eq!(log.contains("test loss"), epoch == 4, "{log}");
        after.push(weights_of(&retrain.join("last.safetensors")));
    }
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(retrain.join(f)).unwrap()).unwrap()
    };
    let metrics = json("metrics.json");
    let vals: Vec<f64> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m.get("test_acc").is_none(), "{m}");
            m["val_acc"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(vals.len(), 4);
    // Epochs count from 1, as the log's `retrain epoch 1/4` does.
    let numbers: Vec<u64> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    let best = (0..4).fold(0, |b, e| if vals[e] > vals[b] { e } else { b });
    assert!(
        best < 3,
        "best is the last epoch, which tells nothing: {vals:?}"
    );
    assert_ne!(after[best], after[3]);
    let state = json("state.json");
    assert_eq!(state["best"][0].as_u64(), Some(best as u64), "{vals:?}");
    assert_eq!(state["best"][1].as_f64(), Some(vals[best]));
    assert_eq!(weights_of(&retrain.join("best.safetensors")), after[best]);
    let eval = json("evaluation.json");
    assert_eq!(eval["weights"], "last.safetensors");
    assert_eq!(eval["images"], 24, "the whole test part");
    let right: u64 = (0..4)
        .map(|k| eval["confusion"][k][k].as_u64().unwrap())
        .sum();
    assert_eq!(eval["accuracy"].as_f64().unwrap(), right as f64 / 24.0);
}

/// With the auxiliary head (32×32 input: 8×8 after two reductions) training runs, and the
/// saved weights leave the head out.
#[test]
fn training_with_the_auxiliary_head() {
    let dir = tempdir("train-aux");
    let p = train_pipeline(&dir, "aux", 32, "auxiliary_weight: 0.4, epochs: 1,");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("epochs: 3, ", "");
    std::fs::write(&p, text).unwrap();
    run_ok(
        bin()
            .args(["train"])
            .arg(&p)
            .args(["--genotype", "DARTS_V1", "--out"])
            .arg(dir.join("o")),
    );
    let w = weights_of(&dir.join("o/aux/retrain/last.safetensors"));
    assert!(!w.is_empty() && w.iter().all(|(k, _)| !k.starts_with("aux.")));
}

/// Bad input to `train` and `eval`: clear errors naming the entry, exit code 2.
#[test]
fn training_bad_input_is_a_clean_error() {
    let dir = tempdir("train-bad");
    let p = train_pipeline(&dir, "bad", 8, "epochs: 1,");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("epochs: 3, ", "");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("o");
    // No genotype anywhere.
    let e = fails(bin().args(["train"]).arg(&p).arg("--out").arg(&out));
    assert!(
        e.contains("no genotype to train") && e.contains("nas-pipe search"),
        "{e}"
    );
    // A genotype that does not fit the space: unknown op, input out of range, node count.
    let g = dir.join("g.ron");
    for (body, expect) in [
        (
            r#"Genotype(version: 1, space: "darts", cells: {"normal": [[("sep_conv_9x9", 0), ("skip_connect", 1)], [("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("skip_connect", 1)]], "reduce": [[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)]]})"#,
            "sep_conv_9x9",
        ),
        (
            r#"Genotype(version: 1, space: "darts", cells: {"normal": [[("skip_connect", 7), ("skip_connect", 1)], [("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("skip_connect", 1)]], "reduce": [[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)]]})"#,
            "7",
        ),
        (
            r#"Genotype(version: 1, space: "darts", cells: {"normal": [[("skip_connect", 0), ("skip_connect", 1)]], "reduce": [[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("max_pool_3x3", 0), ("max_pool_3x3", 1)]]})"#,
            "4",
        ),
    ] {
        std::fs::write(&g, body).unwrap();
        let e = fails(
            bin()
                .args(["train"])
                .arg(&p)
                .arg("--genotype")
                .arg(&g)
                .arg("--out")
                .arg(&out),
        );
        assert!(e.contains("g.ron:1:") && e.contains(expect), "{e}");
    }
    assert!(
        !out.join("bad/retrain").exists(),
        "nothing written for a bad genotype"
    );

    // Weights for another architecture: the first mismatching entry is named.
    run_ok(
        bin()
            .args(["train"])
            .arg(&p)
            .args(["--genotype", "DARTS_V2", "--out"])
            .arg(&out),
    );
    let other = dir.join("other");
    run_ok(
        bin()
            .args(["train"])
            .arg(&p)
            .args(["--genotype", "DARTS_V1", "--out"])
            .arg(&other),
    );
    let e = fails(
        bin()
            .args(["eval"])
            .arg(&p)
            .arg("--weights")
            .arg(other.join("bad/retrain/last.safetensors"))
            .arg("--out")
            .arg(&out),
    );
    assert!(
        e.contains("is missing") || e.contains("not part of this architecture"),
        "{e}"
    );
    assert!(e.contains("layers."), "{e}");
    let e = fails(
        bin()
            .args(["eval"])
            .arg(&p)
            .args(["--weights", "nothing.safetensors", "--out"])
            .arg(&out),
    );
    assert!(e.contains("nothing.safetensors"), "{e}");
}

/// Issue #23: a paced training (a budget's) fits each epoch after the first to the time
/// left at the last epoch's rate, and records every epoch's images and epochs: no time left
/// gives one batch an epoch; time over gives the whole training part and then more epochs,
/// the schedule still ending at its floor. Each epoch follows from the epochs recorded
/// before it, so a stopped and resumed paced training decides as it would have.
#[test]
fn paced_training_fits_each_epoch_to_the_time_left() {
    use nas_pipe::run::retrain::EpochMetrics;
    use nas_pipe::stages::retrain::{self, Options, pace};
    let dir = tempdir("train-paced");
    let file = train_pipeline(&dir, "t", 8, "images: 32,");
    let mut sources = nas_pipe::spec::Sources::default();
    let p = nas_pipe::pipeline::resolve::load(&mut sources, &file).unwrap();
    let parts = p.load_data(5).unwrap();
    let available = parts.train.len();
    assert!(available > 32, "{available}");
    let pace = |seconds: f64| pace::Pace {
        seconds,
        epochs: 3,
        planned: 32,
        available,
        least: 16,
        val: parts.val.len(),
        test: parts.test.len(),
        eval_every: 1,
    };
    let train = |out: &str, seconds: f64, stop_after: Option<usize>| {
        let run_dir = dir.join(out).join("t");
        let p = p.in_run_folder(&run_dir);
        let g = retrain::choose_genotype(&p, &run_dir, Some("DARTS_V2")).unwrap();
        let o = Options {
            stop_after,
            progress: false,
            paced: Some(seconds),
        };
        retrain::run(&p, &run_dir, &candle_core::Device::Cpu, &g, &o).unwrap()
    };
    let ran = |m: &[EpochMetrics]| -> Vec<(usize, usize)> {
        m.iter().map(|e| (e.images, e.epochs)).collect()
    };
    let late = train("late", 0.0, None);
    // Two planned batches, then one: the fewest.
    assert_eq!(ran(&late.metrics), [(32, 3), (16, 3), (16, 3)]);
    assert!(late.evaluation.is_some());

    // Two seconds hold many epochs of these few images.
    train("early", 2.0, Some(1));
    let early = train("early", 2.0, None);
    let m = &early.metrics;
    assert!(early.evaluation.is_some());
    assert!(m.len() > 3, "{:?}", ran(m));
    // More epochs once one would need more than the training part.
    assert!(
        m[1].epochs > 3 && (17..=available).contains(&m[1].images),
        "{:?}",
        ran(m)
    );
    assert_eq!(m.last().unwrap().epochs, m.len());
    for (k, e) in m.iter().enumerate() {
        let now = pace(2.0).next(&m[..k]);
        assert_eq!(
            (e.images, e.epochs),
            (now.images, now.epochs),
            "{:?}",
            ran(m)
        );
        assert!(e.eval_seconds.is_some());
    }
    // The last epoch ends the planned schedule, its last step near the floor (0).
    let last = m.len() - 1;
    let (x0, share) = pace::span(&m[..last], 3, m[last].epochs);
    assert!((x0 + share - 3.0).abs() < 1e-9, "{x0} {share}");
    assert!(m[last].lr.1 < 0.1 * share, "{:?}", m[last].lr);
    assert!(m[last].lr.1 < m[1].lr.1 && m[1].lr.0 <= m[0].lr.1 + 1e-12);
}

/// `schedule: Linear` in the optimizer: after the same warm-up, the learning rate falls along
/// a line instead of the cosine; the two meet halfway, the line below the cosine before
/// and above it after.
#[test]
fn a_linear_schedule_falls_along_a_line() {
    let dir = tempdir("train-linear");
    let lrs = |name: &str, schedule: &str| -> Vec<(f64, f64)> {
        let p = train_pipeline(&dir, name, 8, "");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("warmup_epochs: 1)", &format!("warmup_epochs: 1{schedule})"));
        std::fs::write(&p, text).unwrap();
        run_ok(
            bin()
                .args(["train", "--genotype", "DARTS_V2", "--out"])
                .arg(dir.join("o"))
                .arg(&p),
        );
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("o").join(name).join("retrain/metrics.json")).unwrap(),
        )
        .unwrap();
        m.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["lr"][0].as_f64().unwrap(), e["lr"][1].as_f64().unwrap()))
            .collect()
    };
    let cosine = lrs("cosine", "");
    let line = lrs("line", ", schedule: Linear");
    assert_eq!(line.len(), 3);
    // Epoch 1 warms up alike; the fall starts at lr in epoch 2 and is halfway in epoch 3.
    assert_eq!(line[0], cosine[0]);
    assert_eq!(line[1].0, 0.1);
    assert!((line[2].0 - 0.05).abs() < 1e-9 && (cosine[2].0 - 0.05).abs() < 1e-9);
    assert!(line[1].1 < cosine[1].1, "{line:?} {cosine:?}");
    assert!(line[2].1 > cosine[2].1, "{line:?} {cosine:?}");
    // Equal steps: the fall takes the 2S steps of epochs 2 and 3, so its last step is at
    // lr / 2S, and epoch 2 ends S - 1 steps into it.
    let s = (0.1 / (2.0 * line[2].1)).round();
    assert!(s >= 2.0, "{line:?}");
    assert!((line[2].1 - 0.1 / (2.0 * s)).abs() < 1e-12, "{line:?}");
    assert!(
        (line[1].1 - 0.1 * (1.0 - (s - 1.0) / (2.0 * s))).abs() < 1e-12,
        "{line:?}"
    );
}

/// `ema` keeps a moving average of the weights beside the trained ones: `last.safetensors`
/// and the evaluations are the average's, the checkpoint carries it and its count of
/// updates (one per step), and a training stopped after an epoch and resumed ends with the
/// same average as an uninterrupted one.
#[test]
fn a_weight_average_is_kept_evaluated_and_resumed() {
    let dir = tempdir("train-ema");
    let plain = train_pipeline(&dir, "plain", 8, "");
    let avg = train_pipeline(&dir, "avg", 8, "ema: 0.9,");
    let train = |p: &Path, out: &str, stop: Option<&str>| {
        let mut c = bin();
        c.args(["train", "--genotype", "DARTS_V2", "--out"])
            .arg(dir.join(out))
            .arg(p);
        if let Some(s) = stop {
            c.args(["--stop-after", s]);
        }
        run_ok(&mut c)
    };
    train(&plain, "o", None);
    train(&avg, "o", None);
    train(&avg, "resumed", Some("1"));
    train(&avg, "resumed", None);
    let run = |out: &str, name: &str| dir.join(out).join(name).join("retrain");
    let (p, a, r) = (run("o", "plain"), run("o", "avg"), run("resumed", "avg"));
    let last = |d: &Path| weights_of(&d.join("last.safetensors"));
    assert_eq!(last(&a), last(&r));
    assert_ne!(
        last(&a),
        last(&p),
        "last.safetensors is the trained weights, not the average"
    );
    let json = |d: &Path, f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join(f)).unwrap()).unwrap()
    };
    assert_eq!(json(&a, "evaluation.json"), json(&r, "evaluation.json"));
    let val = |d: &Path| -> Vec<f64> {
        let m = json(d, "metrics.json");
        m.as_array()
            .unwrap()
            .iter()
            .map(|e| e["val_loss"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(val(&a), val(&r));
    assert_ne!(val(&a), val(&p), "the validations evaluate the average");
    // One update per training step, counted in the checkpoint.
    let m = json(&a, "metrics.json");
    let steps: u64 = m
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["images"].as_u64().unwrap().div_ceil(16))
        .sum();
    let c = candle_core::safetensors::load(
        a.join("checkpoint-3.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let updates = c["ema.updates"].to_vec1::<f64>().unwrap();
    assert_eq!(updates, [steps as f64]);
    // The average's tensors sit beside the trained ones under `ema.`.
    let trained = c.keys().filter(|k| k.starts_with("weights.")).count();
    let averaged = c.keys().filter(|k| k.starts_with("ema.weights.")).count();
    assert!(
        trained > 0 && trained == averaged,
        "{trained} vs {averaged}"
    );
    // `eval` on the folder scores the kept weights: the average's test accuracy.
    let acc = json(&a, "evaluation.json")["accuracy"].as_f64().unwrap();
    let out = run_ok(
        bin()
            .args(["eval"])
            .arg(&avg)
            .arg("--out")
            .arg(dir.join("o")),
    );
    assert!(
        out.contains(&format!("test accuracy {:.2}%", 100.0 * acc)),
        "{out} vs {acc}"
    );
}
