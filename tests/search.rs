//! Searching: DARTS and its variants on a planted op, resumed searches, derivation,
//! and the multi-trial strategies (study, trials, weight sharing, latency).

use std::path::{Path, PathBuf};

use nas_pipe::space::genotype::Genotype;
use nas_pipe::space::{self, Overrides, Space};
use nas_pipe::spec::space::{Input, SearchSpace};
use nas_pipe::spec::{Source, Sources, Span};

use crate::common::*;

// ---- Training core ----

fn compile_text(name: &str, text: &str) -> Space {
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(Path::new(name), text.into()));
    let raw: SearchSpace = sources.parse(id).unwrap();
    space::compile(&sources, &raw, &Overrides::default()).unwrap()
}

/// A fixed random 3×3 conv "teacher" makes the data; one mixed edge over {none, skip, avg
/// pool, 1×1 conv, 3×3 conv} learns to regress it. The 3×3 conv's weight must clearly win,
/// and derivation must pick it.
#[test]
fn planted_op_wins_and_is_derived() {
    use candle_core::{Device, Tensor};
    use nas_pipe::nets::optim::{Adam, Sgd};
    use nas_pipe::nets::supernet::Supernet;
    let s = compile_text(
        "planted.ron",
        r#"SearchSpace(
            name: "planted",
            input: (channels: 4, size: 8, classes: 2),
            ops: [("none", Zero), ("skip", Identity), ("avg_pool_3x3", AvgPool(kernel: 3)),
                  ("conv_1x1", ReluConvBn(kernel: 1)), ("conv_3x3", ReluConvBn(kernel: 3))],
            cells: { "edge": Cell(inputs: 1, nodes: 1, output: Last) },
            network: Sequence(blocks: [Cell("edge"), GlobalPoolLinear]),
            derive: ArgmaxPerEdge,
        )"#,
    );
    let dev = Device::Cpu;
    let net = Supernet::new(&s, &dev, 1).unwrap();
    // Teacher: y = standardise(conv3x3(x)) per channel; inputs ≥ 0 so the student's ReLU is
    // the identity on them.
    let mut rng = Rng(42);
    let mut uniform = |shape: &[usize], lo: f32, hi: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| lo + (hi - lo) * (rng.next() >> 11) as f32 / (1u64 << 53) as f32)
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let teacher = uniform(&[4, 4, 3, 3], -0.8, 0.8);
    let mut batch = || {
        let x = uniform(&[16, 4, 8, 8], 0.0, 1.0);
        let y = x.conv2d(&teacher, 1, 1, 1, 1).unwrap();
        let m = y.mean_keepdim((0, 2, 3)).unwrap();
        let c = y.broadcast_sub(&m).unwrap();
        let sd = c
            .sqr()
            .unwrap()
            .mean_keepdim((0, 2, 3))
            .unwrap()
            .sqrt()
            .unwrap();
        (x, c.broadcast_div(&(sd + 1e-5).unwrap()).unwrap())
    };
    let mut w_opt = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
    let mut a_opt = Adam::new(net.alphas.params(), 3e-3, (0.5, 0.999), 1e-3);
    let mse = |x: &Tensor, y: &Tensor| {
        (net.forward_to(x, true, 0).unwrap() - y)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    for _ in 0..300 {
        let (xv, yv) = batch();
        a_opt.step(&mse(&xv, &yv).backward().unwrap()).unwrap();
        let (xt, yt) = batch();
        w_opt
            .step(&mse(&xt, &yt).backward().unwrap(), 0.05)
            .unwrap();
    }
    let w = net.cell_weights().unwrap()[0].clone().unwrap();
    let conv3 = w[0][4];
    let others = w[0][..4].iter().cloned().fold(0f32, f32::max);
    assert!(
        conv3 > 0.4 && conv3 > 1.5 * others,
        "weights after 300 steps: {:?}",
        w[0]
    );
    let g = nas_pipe::space::genotype::derive(
        &s,
        &net.cell_weights().unwrap(),
        &net.slot_weights().unwrap(),
    );
    assert_eq!(
        g.cells.0[0].1.value[0][0].value,
        ("conv_3x3".to_string(), 0)
    );
    eprintln!("planted-op weights after 300 steps: {:?}", w[0]);
}

/// Second-order DARTS gives a finite alpha gradient that differs from the first-order one,
/// and its Hessian-vector term matches an independent finite difference of the loss alone:
/// u · [∇²_{α,w} L · v] = ∂²/∂t∂s L(w + t·v, α + s·u) at 0.
#[test]
fn second_order_darts_hessian_vector_product() {
    use candle_core::{DType, Device, Tensor};
    use nas_pipe::nets::optim::{Adam, Sgd};
    use nas_pipe::nets::supernet::Supernet;
    use nas_pipe::spec::pipeline::Order;
    use nas_pipe::stages::search::darts::step::{Darts, loss_and_correct};
    let ov = Overrides {
        input: Some(Input {
            channels: 3,
            size: 8,
            classes: 4,
        }),
        channels: Some((2, Span::default())),
        layers: Some((3, Span::default())),
    };
    let s = load_space("schemas/darts.ron", ov);
    let dev = Device::Cpu;
    let net = Supernet::with_dtype(&s, &dev, DType::F64, 3).unwrap();
    let w_opt = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
    let a_opt = Adam::new(net.alphas.params(), 3e-4, (0.5, 0.999), 1e-3);
    let darts = Darts::new(net, w_opt, a_opt, Order::Second);
    let mut rng = Rng(5);
    let mut data = |n: usize| {
        let v: Vec<f64> = (0..n * 3 * 64)
            .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            .collect();
        let y: Vec<u32> = (0..n).map(|_| (rng.next() % 4) as u32).collect();
        (
            Tensor::from_vec(v, (n, 3, 8, 8), &dev).unwrap(),
            Tensor::new(y.as_slice(), &dev).unwrap(),
        )
    };
    let (xt, yt) = data(4);
    let (xv, yv) = data(4);
    let flat = |ts: &[Tensor]| -> Vec<f64> {
        ts.iter()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .collect()
    };
    let first = flat(&darts.arch_grad_first(&xv, &yv).unwrap().1);
    let second = flat(&darts.arch_grad_second(&xt, &yt, &xv, &yv, 0.025).unwrap().1);
    assert!(second.iter().all(|g| g.is_finite()));
    let diff: f64 = first.iter().zip(&second).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-9, "second order equals first order");

    // The Hessian-vector term, checked where finite differences are exact enough: a
    // network with no ReLU or max pool (DARTS's cells are full of kinks, so a finite
    // difference of the loss there measures the kinks, not the Hessian).
    let smooth = compile_text(
        "smooth.ron",
        r#"SearchSpace(
            name: "smooth",
            input: (channels: 3, size: 8, classes: 4),
            ops: [("none", Zero), ("skip", Identity), ("avg", AvgPool(kernel: 3))],
            cells: { "c": Cell(inputs: 1, nodes: 2, output: Last) },
            network: Sequence(blocks: [ConvBn(kernel: 3, channels: 4), Cell("c"), Cell("c"), GlobalPoolLinear]),
            derive: ArgmaxPerEdge,
        )"#,
    );
    let net = Supernet::with_dtype(&smooth, &dev, DType::F64, 4).unwrap();
    let w_opt = Sgd::new(net.weights.params(), 0.9, false, 3e-4, None);
    let a_opt = Adam::new(net.alphas.params(), 3e-4, (0.5, 0.999), 1e-3);
    let darts = Darts::new(net, w_opt, a_opt, Order::Second);
    // Make the architecture weights large enough to matter.
    for (_, a) in darts.a_opt.params() {
        let n = a.elem_count();
        let v: Vec<f64> = (0..n)
            .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
            .collect();
        a.set(&Tensor::from_vec(v, a.shape(), &dev).unwrap())
            .unwrap();
    }
    let wv: Vec<_> = darts
        .w_opt
        .params()
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    let av: Vec<_> = darts
        .a_opt
        .params()
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    let w0: Vec<Tensor> = wv.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let a0: Vec<Tensor> = av.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let mut dir = |ts: &[Tensor]| -> Vec<Tensor> {
        ts.iter()
            .map(|t| {
                let v: Vec<f64> = (0..t.elem_count())
                    .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
                    .collect();
                Tensor::from_vec(v, t.shape(), &dev).unwrap()
            })
            .collect()
    };
    let v = dir(&w0);
    let u = dir(&a0);
    // DARTS's own step, ε = 0.01 / ‖v‖.
    let hv = darts.hessian_term(&xt, &yt, &w0, &v).unwrap();
    let u_hv: f64 = flat(&u).iter().zip(flat(&hv)).map(|(a, b)| a * b).sum();
    let loss_at = |t: f64, s_: f64| -> f64 {
        for ((var, w), d) in wv.iter().zip(&w0).zip(&v) {
            var.set(&(w + d.affine(t, 0.0).unwrap()).unwrap()).unwrap();
        }
        for ((var, a), d) in av.iter().zip(&a0).zip(&u) {
            var.set(&(a + d.affine(s_, 0.0).unwrap()).unwrap()).unwrap();
        }
        let logits = darts.net.forward(&xt, true).unwrap();
        loss_and_correct(&logits, &yt)
            .unwrap()
            .0
            .to_scalar::<f64>()
            .unwrap()
    };
    let h = 1e-4;
    let mixed = (loss_at(h, h) - loss_at(h, -h) - loss_at(-h, h) + loss_at(-h, -h)) / (4.0 * h * h);
    loss_at(0.0, 0.0);
    let rel = (u_hv - mixed).abs() / mixed.abs().max(1e-12);
    eprintln!(
        "u·Hv = {u_hv}, mixed partial by finite differences = {mixed}, relative error {rel:.2e}"
    );
    assert!(
        mixed.abs() > 1e-6,
        "the check is vacuous: mixed partial {mixed}"
    );
    assert!(
        rel < 1e-4,
        "u·Hv = {u_hv}, finite difference = {mixed}, relative error {rel}"
    );
}

fn search_pipeline(dir: &Path, epochs: u32, seed: u64) -> PathBuf {
    search_pipeline_variant(dir, epochs, seed, "Standard")
}

fn search_pipeline_variant(dir: &Path, epochs: u32, seed: u64, variant: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "resume",
    seed: {seed},
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 48, test: 16),
    space: "{}",
    search: Darts(
        order: First, epochs: {epochs}, batch_size: 8, channels: 2, layers: 3,
        weights: Sgd(lr: 0.05, lr_min: 0.001, weight_decay: 3e-4, grad_clip: 5.0),
        arch: Adam(lr: 3e-2, betas: (0.5, 0.999), weight_decay: 1e-3),
        augment: (crop_padding: 1, flip: true),
        variant: {variant},
    ),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join("pipeline.ron");
    std::fs::write(&path, text).unwrap();
    path
}

fn checkpoint_alphas(run: &Path) -> Vec<(String, Vec<f32>)> {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("search/state.json")).unwrap()).unwrap();
    let file = run
        .join("search")
        .join(state["checkpoint"].as_str().unwrap());
    let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("alphas.") || k.starts_with("weights."))
        .map(|(k, v)| {
            (
                k.clone(),
                v.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A search stopped after its first epoch and run again ends with the same alphas, weights
/// and genotype as one that ran straight through.
#[test]
fn resumed_search_equals_uninterrupted() {
    let dir = tempdir("resume");
    let p = search_pipeline(&dir, 2, 11);
    let run = |out: &str, stop: Option<&str>| {
        let mut c = bin();
        c.args(["search"]).arg(&p).arg("--out").arg(dir.join(out));
        if let Some(s) = stop {
            c.args(["--stop-after", s]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run("straight", None);
    let stopped = run("resumed", Some("1"));
    assert!(stopped.contains("stopped after epoch 1 of 2"), "{stopped}");
    assert!(!dir.join("resumed/resume/genotype.ron").exists());
    run("resumed", None);
    let a = std::fs::read_to_string(dir.join("straight/resume/genotype.ron")).unwrap();
    let b = std::fs::read_to_string(dir.join("resumed/resume/genotype.ron")).unwrap();
    assert_eq!(a, b);
    let (ca, cb) = (
        checkpoint_alphas(&dir.join("straight/resume")),
        checkpoint_alphas(&dir.join("resumed/resume")),
    );
    assert!(!ca.is_empty());
    assert_eq!(ca, cb);
    // The genotype is valid in the space.
    let s = load_space("schemas/darts.ron", Overrides::default());
    let src = Source::from_text(Path::new("genotype.ron"), a);
    let g: Genotype = src.parse().unwrap();
    g.resolve(&src, &s).unwrap();

    // A checkpoint from another spec is refused and left untouched.
    let state_before = std::fs::read(dir.join("straight/resume/search/state.json")).unwrap();
    let p2 = search_pipeline(&dir, 2, 12);
    let o = bin()
        .args(["search"])
        .arg(&p2)
        .arg("--out")
        .arg(dir.join("straight"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("different spec"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(dir.join("straight/resume/search/state.json")).unwrap(),
        state_before
    );
}

/// GDAS and PC-DARTS (with its warm-up ending after the first epoch, so the architecture
/// weights move only after the resume) stopped after their first epoch and run again end
/// with the same alphas (β included), weights and genotype as runs straight through.
#[test]
fn resumed_variant_searches_equal_uninterrupted() {
    for (name, variant) in [
        ("gdas", "Gdas(tau_max: 5.0, tau_min: 0.5)"),
        ("pc", "PcDarts(k: 2, arch_warmup_epochs: 1)"),
    ] {
        let dir = tempdir(&format!("resume-{name}"));
        let p = search_pipeline_variant(&dir, 2, 11, variant);
        let run = |out: &str, stop: Option<&str>| {
            let mut c = bin();
            c.args(["search"]).arg(&p).arg("--out").arg(dir.join(out));
            if let Some(s) = stop {
                c.args(["--stop-after", s]);
            }
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run("straight", None);
        run("resumed", Some("1"));
        run("resumed", None);
        let a = std::fs::read_to_string(dir.join("straight/resume/genotype.ron")).unwrap();
        let b = std::fs::read_to_string(dir.join("resumed/resume/genotype.ron")).unwrap();
        assert_eq!(a, b, "{name}");
        let (ca, cb) = (
            checkpoint_alphas(&dir.join("straight/resume")),
            checkpoint_alphas(&dir.join("resumed/resume")),
        );
        assert_eq!(ca, cb, "{name}");
        let betas = ca
            .iter()
            .filter(|(k, _)| k.starts_with("alphas.betas."))
            .count();
        assert_eq!(betas, if name == "pc" { 2 } else { 0 }, "{name}");
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("straight/resume/search/state.json")).unwrap(),
        )
        .unwrap();
        let history = state["history"].as_array().unwrap();
        assert_eq!(history.len(), 2);
        if name == "pc" {
            // The architecture moves after the warm-up; the edge weights are recorded.
            assert_ne!(history[0]["cells"], history[1]["cells"]);
            assert_eq!(history[0]["edges"].as_array().unwrap().len(), 2);
        }
        let s = load_space("schemas/darts.ron", Overrides::default());
        let src = Source::from_text(Path::new("genotype.ron"), a);
        let g: Genotype = src.parse().unwrap();
        g.resolve(&src, &s).unwrap();
    }
}

#[test]
fn search_with_missing_data_names_the_file() {
    let dir = tempdir("missing-data");
    let text = std::fs::read_to_string(root().join("pipelines/fashion-mnist.ron"))
        .unwrap()
        .replace(
            "/usr/share/datasets/fashion-mnist",
            "/nonexistent/fashion-mnist",
        )
        .replace(
            "\"../schemas/darts.ron\"",
            &format!(
                "{:?}",
                root().join("schemas/darts.ron").display().to_string()
            ),
        );
    let p = dir.join("p.ron");
    std::fs::write(&p, text).unwrap();
    let e = fails(
        bin()
            .args(["search"])
            .arg(&p)
            .arg("--out")
            .arg(dir.join("out")),
    );
    assert!(
        e.starts_with("nas-pipe: ") && e.contains("/nonexistent/fashion-mnist"),
        "{e}"
    );
    assert!(!dir.join("out").exists());
}

/// Weights that favour DARTS_V2's edges and ops derive DARTS_V2; NB201 takes each edge's
/// argmax with `none` allowed.
#[test]
fn derivation_rules_read_off_the_weights() {
    let s = load_space("schemas/darts.ron", Overrides::default());
    let v2 = arch(&s, "DARTS_V2");
    let weights: Vec<Option<Vec<Vec<f32>>>> = s
        .cells
        .iter()
        .enumerate()
        .map(|(ci, cell)| {
            let chosen = v2.cells[ci].as_ref().unwrap();
            Some(
                (0..cell.edges.len())
                    .map(|e| {
                        // Unchosen edges: `none` dominates, every other op weaker than any
                        // chosen edge's op.
                        let mut w = vec![0.05f32; cell.candidates.len()];
                        w[0] = 0.6;
                        if let Some((_, c)) = chosen.iter().find(|(x, _)| *x == e) {
                            let k = cell.candidates.iter().position(|x| x == c).unwrap();
                            w = vec![0.02; cell.candidates.len()];
                            w[0] = 0.3;
                            w[k] = 0.5;
                        }
                        w
                    })
                    .collect(),
            )
        })
        .collect();
    let g = nas_pipe::space::genotype::derive(&s, &weights, &[]);
    let src = Source::from_text(Path::new("derived"), String::new());
    assert_eq!(g.resolve(&src, &s).unwrap(), v2);

    let nb = load_space("schemas/nas-bench-201.ron", Overrides::default());
    // Edge e prefers candidate e % 5, `none` (0) included.
    let w: Vec<Vec<f32>> = (0..6)
        .map(|e| {
            (0..5)
                .map(|k| if k == e % 5 { 0.9 } else { 0.025 })
                .collect()
        })
        .collect();
    let g = nas_pipe::space::genotype::derive(&nb, &[Some(w)], &[]);
    let want = arch(
        &nb,
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|",
    );
    assert_eq!(g.resolve(&src, &nb).unwrap(), want);
}

// ---- Multi-trial search ----

/// Reads the 12-epoch NB201 table: architecture string → (cifar10-val, cifar10-test).
fn nb201_table() -> std::collections::HashMap<String, (f64, f64)> {
    let t = nas_pipe::stages::search::evaluator::Table::load(
        &root().join("tables/nb201-mini-12ep.csv.gz"),
    )
    .unwrap();
    let (v, s) = (
        t.column("cifar10-val").unwrap(),
        t.column("cifar10-test").unwrap(),
    );
    (0..t.len())
        .map(|r| (t.arch(r).to_string(), (t.value(r, v), t.value(r, s))))
        .collect()
}

/// `nas-pipe study` over seeds: every pick is a table row whose columns are the reported
/// scores, the search signal is the best of what was evaluated, a second run gives the
/// same file, and evolution's mean beats random search's.
#[test]
fn study_scores_every_seed_from_the_table_and_repeats_exactly() {
    let dir = tempdir("study");
    let run = || {
        let o = bin()
            .args([
                "study",
                "pipelines/nb201-random.ron",
                "pipelines/nb201-evolution.ron",
            ])
            .args(["--seeds", "40", "--out"])
            .arg(&dir)
            .arg("--plot")
            .arg(dir.join("curves.svg"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = run();
    assert!(
        text.contains("cifar10-val (search)") && text.contains("cifar10-test (report)"),
        "{text}"
    );
    assert!(text.contains("nb201-evolution − nb201-random"), "{text}");
    let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("nb201-evolution (evolution)"));
    let table = nb201_table();
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(name).join("study.json")).unwrap()).unwrap()
    };
    let (random, evolution) = (read("nb201-random"), read("nb201-evolution"));
    for s in [&random, &evolution] {
        let seeds = s["seeds"].as_array().unwrap();
        assert_eq!(seeds.len(), 40);
        for seed in seeds {
            let (val, test) = table[seed["nb201"].as_str().unwrap()];
            assert_eq!(seed["search"].as_f64().unwrap(), val);
            assert_eq!(seed["report"].as_f64().unwrap(), test);
            assert_eq!(seed["evaluations"].as_u64().unwrap(), 100);
        }
        assert_eq!(s["curve"].as_array().unwrap().len(), 100);
    }
    let mean = |s: &serde_json::Value| s["report"]["mean"].as_f64().unwrap();
    assert!(mean(&evolution) > mean(&random), "{text}");
    let first = std::fs::read(dir.join("nb201-evolution/study.json")).unwrap();
    run();
    assert_eq!(
        std::fs::read(dir.join("nb201-evolution/study.json")).unwrap(),
        first
    );
}

fn trials_record(run: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("search/trials.json")).unwrap()).unwrap();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("seconds");
            r
        })
        .collect()
}

/// A multi-trial search stopped part way and run again replays its record and ends with
/// the same record and genotype as one that ran straight through, for every strategy.
#[test]
fn resumed_trials_equal_uninterrupted() {
    let dir = tempdir("trials-resume");
    for strategy in ["random", "evolution", "reinforce", "local", "predictor"] {
        let p = format!("pipelines/nb201-{strategy}.ron");
        let run = |out: &str, stop: Option<&str>| {
            let mut c = bin();
            c.args(["search", &p, "--out"]).arg(dir.join(out));
            if let Some(s) = stop {
                c.args(["--stop-after", s]);
            }
            let o = c.output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let done = run("straight", None);
        assert!(done.contains("search finished: 100 evaluations"), "{done}");
        let stopped = run("resumed", Some("37"));
        assert!(stopped.contains("stopped after 37 proposals"), "{stopped}");
        run("resumed", None);
        let name = format!("nb201-{strategy}");
        let (a, b) = (
            dir.join("straight").join(&name),
            dir.join("resumed").join(&name),
        );
        assert_eq!(trials_record(&a), trials_record(&b), "{strategy}");
        assert_eq!(trials_record(&a).len(), 100);
        assert_eq!(
            std::fs::read_to_string(a.join("genotype.ron")).unwrap(),
            std::fs::read_to_string(b.join("genotype.ron")).unwrap()
        );
        // The returned cell is the best by the search signal.
        let best = trials_record(&a)
            .iter()
            .map(|r| r["accuracy"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let front: serde_json::Value =
            serde_json::from_slice(&std::fs::read(a.join("search/pareto.json")).unwrap()).unwrap();
        assert_eq!(front["points"][0]["accuracy"].as_f64().unwrap(), best);
    }
}

/// Issue #20: the multi-trial record is sealed. A flipped byte in `search/trials.json` is
/// caught: the damaged copy goes to `stale/`, the search resumes from
/// `search/trials.previous.json` with a warning and ends with the uninterrupted record; with
/// both copies damaged, or an unsealed record of an earlier version, it stops with exit 2,
/// naming the file and the way out, and moves nothing.
#[test]
fn a_damaged_trials_record_falls_back_to_its_previous_copy() {
    let dir = tempdir("trials-sealed");
    let p = "pipelines/nb201-random.ron";
    let search = |out: &str, stop: Option<&str>| {
        let mut c = bin();
        c.args(["search", p, "--out"]).arg(dir.join(out));
        if let Some(s) = stop {
            c.args(["--stop-after", s]);
        }
        c
    };
    run_ok(&mut search("straight", None));
    run_ok(&mut search("damaged", Some("20")));
    let run = dir.join("damaged/nb201-random");
    let record = run.join("search/trials.json");
    let previous = run.join("search/trials.previous.json");
    assert!(previous.is_file());
    let flip = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let at = text.find("\"accuracy\": ").unwrap() + "\"accuracy\": ".len();
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'7' { b'6' } else { b'7' };
        std::fs::write(path, bytes).unwrap();
    };
    flip(&record);
    let o = search("damaged", None).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("trials.json") && err.contains("trials.previous.json"),
        "{err}"
    );
    let stale: Vec<_> = std::fs::read_dir(run.join("stale"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(stale.len(), 1, "the damaged copy is kept");
    assert_eq!(
        trials_record(&run),
        trials_record(&dir.join("straight/nb201-random"))
    );

    // Both copies damaged: nothing to resume from; exit 2, nothing moved.
    run_ok(&mut search("both", Some("20")));
    let run = dir.join("both/nb201-random");
    flip(&run.join("search/trials.json"));
    flip(&run.join("search/trials.previous.json"));
    let e = fails(&mut search("both", None));
    assert!(
        e.contains("trials.json") && e.contains("no sound copy"),
        "{e}"
    );
    assert!(run.join("search/trials.json").is_file() && !run.join("stale").exists());

    // An unsealed record of an earlier version is refused, not resumed unchecked.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record.clone()).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("blake3");
    v["version"] = 2.into();
    std::fs::write(&record, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    std::fs::remove_file(&previous).unwrap();
    let e = fails(&mut search("damaged", None));
    assert!(e.contains("version 2") && e.contains("no checksum"), "{e}");
}

/// Issue #22: a multi-trial run ended with only `report: …`, and its report showed five
/// "—" headline cards and no drawing of the returned cell. The run now prints the returned
/// architecture, its genotype file, scores, cost and front size; the report's headline
/// holds its figures and the report draws its cell from `search/space.ron`.
#[test]
fn multi_trial_run_prints_and_reports_the_returned_architecture() {
    let dir = tempdir("trials-returned");
    let stdout = run_ok(
        bin()
            .args(["run", "pipelines/nb201-random.ron", "--out"])
            .arg(&dir),
    );
    let run = dir.join("nb201-random");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    let best = &s["trials"]["best"];
    let nb201 = best["nb201"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("returned architecture: {nb201}\n")),
        "{stdout}"
    );
    let genotype = run.join("genotype.ron");
    assert!(
        stdout.contains(&format!("  genotype  {}\n", genotype.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("  scores    search ") && stdout.contains(", cifar10-test "),
        "{stdout}"
    );
    let front = s["trials"]["front"].as_u64().unwrap();
    assert!(
        stdout.contains(&format!(
            "  front     {front} architectures over accuracy, params, macs"
        )),
        "{stdout}"
    );
    let h = &s["headline"];
    assert_eq!(h["test_accuracy"], best["report"]);
    assert_eq!(h["params"], best["params"]);
    assert_eq!(h["macs"], best["macs"]);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("cifar10-test of the returned architecture"));
    // The front table: no column of dashes when no latency was measured, and NB201
    // strings break between node groups and between ops, not inside an op's name.
    assert!(!html.contains("<th class=\"num\">latency (ms)</th>"));
    let breakable = nb201
        .replace('+', "+<wbr>")
        .split('|')
        .collect::<Vec<_>>()
        .join("|<wbr>")
        .replace("|<wbr>+", "|+")
        .replace("|<wbr><", "|<");
    let breakable = breakable
        .strip_suffix("|<wbr>")
        .map_or(breakable.clone(), |b| format!("{b}|"));
    assert!(
        html.contains(&format!("<td>{breakable}</td>")),
        "{breakable}"
    );
    assert!(html.contains("<h3>Cell “cell”</h3>") && html.contains("<svg class=\"graph\""));
    assert!(
        !s["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "search/space.ron")
    );
}

/// A training evaluator on synthetic data: constraints reject candidates before training
/// (they cost no evaluation), the front is non-dominated, and weights are kept.
#[test]
fn trained_trials_apply_constraints_and_keep_a_front() {
    let dir = tempdir("trials-train");
    let text = format!(
        r#"Pipeline(
    name: "trained",
    seed: 3,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 96, test: 32),
    space: "{}",
    search: Trials(
        strategy: Random,
        evaluator: Train(
            train_portion: 0.5,
            recipe: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16,
                optimizer: Sgd(lr: 0.05, weight_decay: 3e-4)),
        ),
        evaluations: 6,
        objectives: [Params, Macs],
        constraints: [MaxParams(9000)],
    ),
)"#,
        root().join("schemas/nas-bench-201.ron").display()
    );
    let p = dir.join("pipeline.ron");
    std::fs::write(&p, text).unwrap();
    let o = bin()
        .arg("run")
        .arg(&p)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = dir.join("trained");
    let records = trials_record(&run);
    let evaluated: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r.get("rejected").is_none())
        .collect();
    assert_eq!(evaluated.len(), 6);
    assert!(records.len() > 6, "no candidate was over the limit");
    for r in &records {
        let params = r["params"].as_u64().unwrap();
        assert_eq!(r.get("rejected").is_some(), params > 9000, "{r}");
        assert_eq!(r.get("accuracy").is_some(), params <= 9000, "{r}");
    }
    let front: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("search/pareto.json")).unwrap()).unwrap();
    let pts = front["points"].as_array().unwrap();
    assert!(!pts.is_empty());
    for a in pts {
        // Trained weights are kept, and the test accuracy of front points is computed.
        assert!(
            run.join(format!(
                "search/weights/{}.safetensors",
                a["key"].as_str().unwrap()
            ))
            .exists()
        );
        assert!(a["report"].as_f64().is_some());
        for b in &evaluated {
            let better = b["accuracy"].as_f64() >= a["accuracy"].as_f64()
                && b["params"].as_u64() <= a["params"].as_u64()
                && b["macs"].as_u64() <= a["macs"].as_u64();
            let strictly = b["accuracy"].as_f64() > a["accuracy"].as_f64()
                || b["params"].as_u64() < a["params"].as_u64()
                || b["macs"].as_u64() < a["macs"].as_u64();
            assert!(!(better && strictly), "{b} dominates front point {a}");
        }
    }
    assert!(run.join("genotype.ron").exists());
    // The report shows the search and its front; its summary copies the record.
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        html.contains("Pareto front over accuracy, params, macs"),
        "no front chart"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["trials"]["evaluations"], 6);
    assert_eq!(summary["trials"]["front"], pts.len());
    assert!(
        summary["missing"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m != "search/state.json")
    );
}

fn write_pipeline(dir: &Path, name: &str, search: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 5,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 96, test: 32),
    space: "{}",
    search: {search},
    {extra}
)"#,
        root().join("schemas/nas-bench-201.ron").display()
    );
    let p = dir.join(format!("{name}.ron"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The weight-sharing evaluator trains one supernet, keeps it, and a stopped search that
/// resumes reads it back and ends with the same record as one run straight through.
#[test]
fn weight_sharing_trials_keep_their_supernet_and_resume_exactly() {
    let dir = tempdir("trials-shared");
    let p = write_pipeline(
        &dir,
        "shared",
        "Trials(
        strategy: Evolution(population: 3, sample: 2),
        evaluator: WeightSharing(epochs: 2, batch_size: 16, channels: 4, layers: 1,
            weights: Sgd(lr: 0.05, weight_decay: 3e-4)),
        evaluations: 8,
    )",
        "",
    );
    let search = |out: &str, stop: Option<&str>| {
        let mut c = bin();
        c.arg("search").arg(&p).arg("--out").arg(dir.join(out));
        if let Some(s) = stop {
            c.args(["--stop-after", s]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    search("straight", None);
    search("resumed", Some("3"));
    let file = dir.join("resumed/shared/search/supernet.safetensors");
    let before = std::fs::read(&file).unwrap();
    search("resumed", None);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the supernet was trained again"
    );
    let (a, b) = (
        trials_record(&dir.join("straight/shared")),
        trials_record(&dir.join("resumed/shared")),
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 8);
    let accs: Vec<f64> = a.iter().map(|r| r["accuracy"].as_f64().unwrap()).collect();
    assert!(accs.iter().all(|x| (0.0..=1.0).contains(x)), "{accs:?}");
    // Different paths through the shared weights score differently.
    assert!(accs.iter().any(|x| *x != accs[0]), "{accs:?}");
}

/// A multi-trial search with a latency objective and limit measures every candidate in
/// ONNX Runtime once, rejects the slow ones before training, and exports and profiles its
/// front.
#[test]
fn latency_trials_measure_reject_and_export_the_front() {
    if ort_runtime("latency_trials_measure_reject_and_export_the_front").is_none() {
        return;
    }
    let dir = tempdir("trials-latency");
    let search = |limit: f64| {
        format!(
            "Trials(
        strategy: Random,
        evaluator: Train(train_portion: 0.5,
            recipe: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16, optimizer: Sgd(lr: 0.05))),
        evaluations: 4,
        objectives: [Latency, Params],
        constraints: [MaxLatencyMs({limit})],
        latency: (timing: (runs: 10)),
        export_front: true,
    )"
        )
    };
    let profile = "profile: Profile(batch_sizes: [1], threads: [1], warmup: 2, runs: 10),";
    let p = write_pipeline(&dir, "lat", &search(1000.0), profile);
    let o = bin()
        .arg("search")
        .arg(&p)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = dir.join("lat");
    let records = trials_record(&run);
    assert!(
        records
            .iter()
            .all(|r| r["latency_ms"].as_f64().unwrap() > 0.0)
    );
    let cached = std::fs::read_dir(run.join("search/latency"))
        .unwrap()
        .count();
    let distinct: std::collections::HashSet<&str> =
        records.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(cached, distinct.len());
    let front: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("search/pareto.json")).unwrap()).unwrap();
    for pt in front["points"].as_array().unwrap() {
        let d = root().join(&run).join(pt["export"].as_str().unwrap());
        assert!(
            d.join("model.onnx").exists() && d.join("profile.json").exists(),
            "{pt}"
        );
        assert!(pt["profiled_ms"].as_f64().unwrap() > 0.0);
    }
    // With a limit at the median measured latency, exactly the candidates over it are
    // rejected, before training.
    let mut lat: Vec<f64> = records
        .iter()
        .map(|r| r["latency_ms"].as_f64().unwrap())
        .collect();
    lat.sort_by(f64::total_cmp);
    let p = write_pipeline(&dir, "lat2", &search(lat[lat.len() / 2]), profile);
    let o = bin()
        .arg("search")
        .arg(&p)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = trials_record(&dir.join("lat2"));
    let limit = lat[lat.len() / 2];
    for r in &records {
        let l = r["latency_ms"].as_f64().unwrap();
        assert_eq!(r.get("rejected").is_some(), l > limit, "{r}");
        assert_eq!(r.get("accuracy").is_some(), l <= limit, "{r}");
    }
}

/// DARTS with a differentiable expected-latency term moves the architecture weights toward
/// cheaper ops: after the same search, the expected latency is lower with the term than
/// with a zero weight.
#[test]
fn latency_term_lowers_the_expected_latency() {
    if ort_runtime("latency_term_lowers_the_expected_latency").is_none() {
        return;
    }
    let dir = tempdir("latency-term");
    let run = |name: &str, weight: f64| -> Vec<f64> {
        let search = format!(
            "Darts(epochs: 2, batch_size: 16, channels: 4, layers: 1,
        weights: Sgd(lr: 0.05), arch: Adam(lr: 0.05),
        latency: (weight: {weight}, timing: (runs: 10)),
    )"
        );
        let p = write_pipeline(&dir, name, &search, "");
        let o = bin()
            .arg("search")
            .arg(&p)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(name).join("search/state.json")).unwrap(),
        )
        .unwrap();
        assert!(dir.join(name).join("search/latency-table.json").exists());
        state["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["expected_latency_ms"].as_f64().unwrap())
            .collect()
    };
    let free = run("free", 0.0);
    // The same per-op table for both (a search reads it when it was measured on this
    // machine with its timing), so that the expected latencies compare.
    std::fs::create_dir_all(dir.join("penalised/search")).unwrap();
    std::fs::copy(
        dir.join("free/search/latency-table.json"),
        dir.join("penalised/search/latency-table.json"),
    )
    .unwrap();
    let penalised = run("penalised", 10.0);
    assert_eq!(
        std::fs::read(dir.join("free/search/latency-table.json")).unwrap(),
        std::fs::read(dir.join("penalised/search/latency-table.json")).unwrap(),
        "the table was measured again"
    );
    assert!(penalised[1] < penalised[0], "{penalised:?}");
    assert!(penalised[1] < free[1], "{penalised:?} vs {free:?}");
}

/// Issue #22: a multi-trial search's progress carries the whole pipeline's ETA: with a
/// training evaluator, retraining is estimated from the evaluations' rate.
#[test]
fn trials_progress_carries_a_pipeline_eta() {
    let dir = tempdir("trials-eta");
    let p = write_pipeline(
        &dir,
        "eta",
        "Trials(
        strategy: Random,
        evaluator: Train(train_portion: 0.5,
            recipe: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16,
                optimizer: Sgd(lr: 0.05, weight_decay: 3e-4))),
        evaluations: 3,
    )",
        "retrain: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16,
        optimizer: Sgd(lr: 0.05, weight_decay: 3e-4)),",
    );
    let o = bin()
        .args(["run", "--json"])
        .arg(&p)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let search = events
        .iter()
        .find(|e| e["event"] == "progress" && e["unit"] == "evaluation")
        .unwrap_or_else(|| panic!("no evaluation progress in {stderr}"));
    assert_eq!(search["task"], "search");
    let (eta, whole) = (search["eta_s"].as_f64(), search["pipeline_eta_s"].as_f64());
    assert!(
        whole.is_some_and(|w| w > eta.unwrap() && w < 3600.0),
        "{search}"
    );
}

/// A zero-cost prior on synthetic data: the pool is scored and recorded, the strategy
/// starts from the kept architectures, every evaluated candidate has its three proxies,
/// the correlations reach the output and summary.json, and two runs write the same record.
#[test]
fn zero_cost_prior_warm_starts_records_proxies_and_repeats_exactly() {
    let dir = tempdir("trials-zero-cost");
    let p = write_pipeline(
        &dir,
        "zc",
        "Trials(
        strategy: Local(init: 3),
        evaluator: Train(train_portion: 0.5,
            recipe: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16,
                optimizer: Sgd(lr: 0.05, weight_decay: 3e-4))),
        evaluations: 5,
        zero_cost: ZeroCost(prior: Naswot, pool: 8, keep: 3, batches: 2, batch_size: 8),
    )",
        "",
    );
    let run = |out: &str| {
        let stdout = run_ok(bin().arg("run").arg(&p).arg("--out").arg(dir.join(out)));
        let run = dir.join(out).join("zc");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("search/trials.json")).unwrap())
                .unwrap();
        (stdout, run, v)
    };
    let (_, a, va) = run("a");
    assert_eq!(va["version"], 3);
    let prior = &va["prior"];
    assert_eq!(prior["pool"].as_array().unwrap().len(), 8);
    let kept: Vec<&serde_json::Value> = prior["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &prior["pool"][i.as_u64().unwrap() as usize]["arch"])
        .collect();
    assert_eq!(kept.len(), 3);
    let records = trials_record(&a);
    for (k, r) in kept.iter().zip(&records) {
        assert_eq!(
            *k, &r["arch"],
            "the strategy did not start from the kept cells"
        );
    }
    for r in records.iter().filter(|r| r.get("accuracy").is_some()) {
        for proxy in ["naswot", "synflow", "grad_norm"] {
            assert!(r["proxies"][proxy].as_f64().is_some(), "{r}");
        }
        assert!(r["proxies"]["grad_norm"].as_f64().unwrap() > 0.0, "{r}");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["trials"]["zero_cost"]["over"], 5);
    let (_, b, vb) = run("b");
    assert_eq!(trials_record(&a), trials_record(&b));
    assert_eq!(va["prior"]["pool"], vb["prior"]["pool"]);
    assert_eq!(va["prior"]["kept"], vb["prior"]["kept"]);
}

/// The number of records in a run's `search/trials.json` (0 while none can be read).
fn records_written(run: &Path) -> usize {
    std::fs::read(run.join("search/trials.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["records"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn trials_json(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("search/trials.json")).unwrap()).unwrap()
}

/// A search with a zero-cost prior SIGKILLed part way, with its prior and some evaluations
/// recorded, resumes from the record without scoring the pool again and ends with the
/// trials, prior and genotype of a search that ran straight through.
#[test]
fn killed_zero_cost_search_resumes_to_the_uninterrupted_result() {
    let dir = tempdir("trials-zero-cost-kill");
    let p = write_pipeline(
        &dir,
        "zck",
        "Trials(
        strategy: Evolution(population: 3, sample: 2),
        evaluator: Train(train_portion: 0.5,
            recipe: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16,
                optimizer: Sgd(lr: 0.05, weight_decay: 3e-4))),
        evaluations: 8,
        zero_cost: ZeroCost(prior: Synflow, pool: 6, keep: 3, batches: 1, batch_size: 8),
    )",
        "",
    );
    let search = |out: &str| {
        let mut c = bin();
        c.arg("search").arg(&p).arg("--out").arg(dir.join(out));
        c
    };
    run_ok(&mut search("straight"));
    let killed = dir.join("killed/zck");
    let mut child = search("killed")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while records_written(&killed) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before it was killed"
        );
        assert!(t0.elapsed().as_secs() < 120, "no third record in 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = trials_json(&killed);
    let done = at_kill["records"].as_array().unwrap().len();
    assert!(
        done < 8,
        "killed after the search finished ({done} records)"
    );
    run_ok(&mut search("killed"));

    let straight = dir.join("straight/zck");
    assert_eq!(trials_record(&straight), trials_record(&killed));
    assert_eq!(trials_record(&straight).len(), 8);
    // The resumed search took its warm start from the record: the prior, scoring time
    // included, is the one written before the kill.
    let (a, b) = (trials_json(&straight), trials_json(&killed));
    assert_eq!(b["prior"], at_kill["prior"], "the pool was scored again");
    for key in ["proxy", "pool", "kept"] {
        assert_eq!(a["prior"][key], b["prior"][key], "{key}");
    }
    assert_eq!(
        std::fs::read(straight.join("genotype.ron")).unwrap(),
        std::fs::read(killed.join("genotype.ron")).unwrap()
    );
}
