//! ONNX export and what reads it: the checker, ONNX Runtime, the profile and validate
//! stages, and the serving examples.

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_pipe::space::Overrides;

use crate::common::*;

// ---- ONNX export ----

/// The Python that runs `tests/onnx_check.py`: `NAS_PIPE_PYTHON` when set, else the
/// checkout's `.venv`, else `python3`; the reason when none can import `numpy`, `onnx` and
/// `onnxruntime`.
fn onnx_python() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("NAS_PIPE_PYTHON") {
        Some(py) => vec![PathBuf::from(py)],
        None => vec![root().join(".venv/bin/python"), PathBuf::from("python3")],
    };
    let mut why = Vec::new();
    for py in candidates {
        match Command::new(&py)
            .args(["-c", "import numpy, onnx, onnxruntime"])
            .output()
        {
            Ok(o) if o.status.success() => return Ok(py),
            Ok(_) => why.push(format!(
                "{} cannot import numpy, onnx and onnxruntime",
                py.display()
            )),
            Err(e) => why.push(format!("{}: {e}", py.display())),
        }
    }
    Err(why.join("; "))
}

/// Gives every BN non-trivial statistics and affine parameters, so that folding and the
/// BatchNormalization nodes are exercised.
fn perturb_batch_norms(store: &nas_pipe::nn::Store, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (name, v) in store.params().into_iter().chain(store.buffers()) {
        // BN tensors are `<...>.bn<k>.<tensor>`.
        let mut parts = name.rsplit('.');
        let tensor = parts.next().unwrap_or_default();
        if !parts.next().is_some_and(|m| m.starts_with("bn")) {
            continue;
        }
        let (lo, hi) = match tensor {
            "running_var" | "weight" => (0.5f32, 1.5f32),
            _ => (-0.3, 0.3),
        };
        let vals: Vec<f32> = (0..v.elem_count())
            .map(|_| rng.random_range(lo..hi))
            .collect();
        v.set(&candle_core::Tensor::from_vec(vals, v.shape(), &candle_core::Device::Cpu).unwrap())
            .unwrap();
    }
}

fn write_f32(path: &Path, t: &candle_core::Tensor) {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Runs `tests/onnx_check.py` on `model` with `x` against Candle's `y`; returns its line.
fn onnx_check(
    py: &Path,
    dir: &Path,
    name: &str,
    model: &[u8],
    x: &candle_core::Tensor,
    y: &candle_core::Tensor,
    tol: f64,
) -> String {
    let (m, xi, yi) = (
        dir.join(format!("{name}.onnx")),
        dir.join(format!("{name}.x")),
        dir.join(format!("{name}.y")),
    );
    std::fs::write(&m, model).unwrap();
    write_f32(&xi, x);
    write_f32(&yi, y);
    let o = Command::new(py)
        .arg(root().join("tests/onnx_check.py"))
        .arg(&m)
        .arg("--input")
        .arg(&xi)
        .arg("--expect")
        .arg(&yi)
        .arg("--tol")
        .arg(tol.to_string())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{name}: {out}");
    out.trim().to_string()
}

/// The exported networks of the three shipped spaces (DARTS at a small size; every size
/// with `NAS_PIPE_ONNX_FULL=1`) and every op alone pass ONNX's full checker and give
/// Candle's evaluation-mode outputs in ONNX Runtime, BN folded and not. Skipped, saying so,
/// when Python lacks `onnx` or `onnxruntime`.
#[test]
fn onnx_exports_pass_the_checker_and_match_candle_in_onnxruntime() {
    use nas_pipe::nets::export::{Options, export, export_op};
    use nas_pipe::nets::model::{Mode, Model};
    use nas_pipe::ops::{BnMode, Op, Shape};
    let py = match onnx_python() {
        Ok(py) => py,
        Err(why) => {
            // Written to stderr directly, past the test harness's capture, so it shows.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED onnx_exports_pass_the_checker_and_match_candle_in_onnxruntime: {why}"
            );
            return;
        }
    };
    let dev = candle_core::Device::Cpu;
    let dir = tempdir("onnx-check");
    let full = std::env::var_os("NAS_PIPE_ONNX_FULL").is_some();
    let darts = load_space(
        "schemas/darts.ron",
        if full {
            Overrides::default()
        } else {
            with_size(4, 5)
        },
    );
    let nb = load_space("schemas/nas-bench-201.ron", Overrides::default());
    let chain = load_space("schemas/mobilenet-chain.ron", Overrides::default());
    let layers: Vec<&str> = std::iter::once("ir_k3_e1")
        .chain((0..4).flat_map(|_| ["ir_k3_e3", "ir_k5_e6", "skip", "ir_k3_e6"]))
        .collect();
    let nets = [
        ("darts_v2", darts.build(&arch(&darts, "DARTS_V2"))),
        ("nb201", nb.build(&arch(&nb, NB201_EXAMPLE))),
        (
            "nb201_zeros",
            nb.build(&arch(
                &nb,
                "|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
            )),
        ),
        ("chain", chain.build(&chain_genotype(&chain, &layers))),
    ];
    for (name, net) in &nets {
        let m = Model::new(net, &dev, 3, false).unwrap();
        perturb_batch_norms(&m.store, 4);
        let x = candle_core::Tensor::randn(0f32, 1., (3, 3, 32, 32), &dev).unwrap();
        let y = m.forward(&x, Mode::Eval).unwrap().logits;
        let meta = test_metadata();
        for fold in [true, false] {
            let opts = Options {
                fold_batch_norm: fold,
                ..Options::default()
            };
            let bytes = export(&m, &meta, &opts).unwrap();
            let line = onnx_check(&py, &dir, &format!("{name}-{fold}"), &bytes, &x, &y, 1e-4);
            eprintln!("{name} (fold {fold}): {line}");
        }
    }
    for op in Op::ALL {
        for stride in [1usize, 2] {
            let store = nas_pipe::nn::Store::new(&dev, 7);
            let bn = BnMode {
                affine: true,
                pool_bn: true,
            };
            let m = op.build(&store.root().pp("op"), 6, 6, stride, bn).unwrap();
            perturb_batch_norms(&store, 8);
            let x = candle_core::Tensor::randn(0f32, 1., (2, 6, 8, 8), &dev).unwrap();
            let y = m.forward(&x, false).unwrap();
            for fold in [true, false] {
                let opts = Options {
                    fold_batch_norm: fold,
                    ..Options::default()
                };
                let bytes = export_op(&m, &store, Shape { c: 6, h: 8, w: 8 }, &opts).unwrap();
                let name = format!(
                    "{}-s{stride}-{fold}",
                    op.describe().replace([' ', ':', ',', '(', ')'], "")
                );
                onnx_check(&py, &dir, &name, &bytes, &x, &y, 1e-5);
            }
        }
    }
}

/// Export metadata for a 3-channel test network with identity normalisation.
fn test_metadata() -> nas_pipe::nets::export::Metadata {
    nas_pipe::nets::export::Metadata {
        spec_hash: "test".into(),
        genotype: String::new(),
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        classes: vec![],
        resize: None,
    }
}

// ---- ONNX Runtime and the profile stage ----

/// `nas-pipe export` writes `<out>/<name>/model.onnx` from the retrain folder; a target it
/// cannot write is a clear error (exit 2) that leaves no temp file.
#[test]
fn export_command_writes_the_model() {
    let dir = tempdir("export-cmd");
    let p = train_pipeline(&dir, "ex", 8, "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("epochs: 3, ", "epochs: 1, ")
        .replace(
            "    retrain: Retrain(",
            "    export: Onnx(opset: 19, fold_batch_norm: false),\n    retrain: Retrain(",
        );
    std::fs::write(&p, text).unwrap();
    let out = dir.join("o");
    // Nothing trained yet.
    let e = fails(bin().args(["export"]).arg(&p).arg("--out").arg(&out));
    assert!(
        e.contains("no retrained model") && e.contains("nas-pipe train"),
        "{e}"
    );
    run_ok(
        bin()
            .args(["train", "--genotype", "DARTS_V2"])
            .arg(&p)
            .arg("--out")
            .arg(&out),
    );
    let said = run_ok(bin().args(["export"]).arg(&p).arg("--out").arg(&out));
    let model = out.join("ex/model.onnx");
    assert!(
        said.starts_with(&format!("wrote {}", model.display())),
        "{said}"
    );
    assert!(said.contains("opset 19, BN as nodes"), "{said}");
    let bytes = std::fs::read(&model).unwrap();
    let m: onnx_protobuf::ModelProto = protobuf::Message::parse_from_bytes(&bytes).unwrap();
    assert_eq!((m.ir_version, m.opset_import[0].version), (9, 19));
    let props: std::collections::HashMap<&str, &str> = m
        .metadata_props
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(props["input_shape"], "[3,8,8]");
    assert_eq!(props["classes"].matches(',').count(), 3);
    assert_eq!(props["spec_hash"].len(), 64);
    assert!(
        props["genotype"].contains("sep_conv_3x3"),
        "{}",
        props["genotype"]
    );
    assert!(
        m.graph
            .node
            .iter()
            .any(|n| n.op_type == "BatchNormalization")
    );
    // The best weights, by name.
    run_ok(
        bin()
            .args(["export", "--weights", "best.safetensors"])
            .arg(&p)
            .arg("--out")
            .arg(&out),
    );
    // A target that cannot be written: a directory in the way.
    std::fs::remove_file(&model).unwrap();
    std::fs::create_dir_all(model.join("x")).unwrap();
    let e = fails(bin().args(["export"]).arg(&p).arg("--out").arg(&out));
    assert!(
        e.starts_with("nas-pipe: cannot write the ONNX model"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(out.join("ex"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn test_model(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

#[test]
fn runtime_runs_the_linear_model_with_hand_derived_logits() {
    let Some(rt) = ort_runtime("runtime_runs_the_linear_model_with_hand_derived_logits") else {
        return;
    };
    use nas_pipe::runtime::Session;
    let path = test_model("linear.onnx");
    let mut s = Session::from_file(rt, &path, 1).unwrap();
    assert_eq!(s.inputs().len(), 1);
    assert_eq!(s.inputs()[0].name, "input");
    assert!(s.inputs()[0].is_f32);
    assert_eq!(s.inputs()[0].shape, vec![None, Some(1), Some(2), Some(2)]);
    assert!(s.ort_version().starts_with("1."), "{}", s.ort_version());
    assert_eq!(s.execution_provider(), "CPUExecutionProvider");
    // logits[j] = Σ_i x_i · (i + 1)(j + 1) / 4: x = 1,2,3,4 gives 30 (j + 1) / 4;
    // x = 0,0,0,1 gives (j + 1).
    let out = s
        .run(&[1., 2., 3., 4., 0., 0., 0., 1.], &[2, 1, 2, 2])
        .unwrap();
    assert_eq!(out.shape, vec![2, 3]);
    assert_eq!(out.data, vec![7.5, 15.0, 22.5, 1.0, 2.0, 3.0]);

    let bytes = std::fs::read(&path).unwrap();
    let mut m = Session::from_bytes(rt, &bytes, 2).unwrap();
    assert_eq!(m.threads(), 2);
    assert_eq!(
        m.run(&[1., 2., 3., 4.], &[1, 1, 2, 2]).unwrap().data,
        vec![7.5, 15.0, 22.5]
    );

    let e = s.run(&[1., 2., 3.], &[1, 1, 2, 2]).unwrap_err().to_string();
    assert_eq!(e, "input of 3 values does not fill shape [1, 1, 2, 2]");
    let e = s.run(&[0.; 9], &[1, 1, 3, 3]).unwrap_err().to_string();
    assert!(e.starts_with("ONNX Runtime run failed: "), "{e}");

    // Bytes ONNX Runtime rejects are a data error naming the file, not a panic.
    let d = tempdir("ort-garbage");
    let g = d.join("garbage.onnx");
    std::fs::write(&g, [0x08, 0x08, 0x3a, 0xff, 0xff, 0x01]).unwrap();
    let e = Session::from_file(rt, &g, 1).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: not an ONNX model: ONNX Runtime: ",
            g.display()
        )),
        "{e}"
    );
}

#[test]
fn profile_measures_every_batch_size_and_thread_count() {
    let Some(rt) = ort_runtime("profile_measures_every_batch_size_and_thread_count") else {
        return;
    };
    use nas_pipe::run::profile::Plan;
    use nas_pipe::stages::profile::{self, Known};
    let plan = Plan {
        batch_sizes: vec![1, 4],
        threads: vec![1, 2],
        warmup: 2,
        runs: 5,
    };
    let path = test_model("tiny_cnn.onnx");
    let mut seen = 0;
    let r = profile::run(rt, &path, &plan, Known::default(), |_| seen += 1).unwrap();
    assert_eq!(seen, 4);
    let cells: Vec<(usize, usize)> = r.rows.iter().map(|r| (r.batch, r.threads)).collect();
    assert_eq!(cells, vec![(1, 1), (4, 1), (1, 2), (4, 2)]);
    for row in &r.rows {
        let l = &row.latency_ms;
        assert!(0.0 < l.min && l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99);
        assert!(l.p99 <= l.max && l.min <= l.mean && l.mean <= l.max);
        let expected = row.batch as f64 * 1e3 / l.mean;
        assert!((row.images_per_s - expected).abs() < 1e-9 * expected);
    }
    // conv 4·3·3·3 + 4, linear 10·4 + 10.
    assert_eq!(r.model.params, Some(162));
    assert_eq!(r.model.params_from.as_deref(), Some("initializers"));
    assert_eq!(r.model.macs, None);
    assert_eq!(r.model.file_bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(r.model.input_shape, vec![None, Some(3), Some(8), Some(8)]);
    assert_eq!(r.ort_version, rt.version);
    assert!(r.notes.is_empty());

    let known = Known {
        params: Some(100),
        macs: Some(12_345),
    };
    let r2 = profile::run(
        rt,
        &test_model("linear.onnx"),
        &Plan {
            threads: vec![1],
            ..plan.clone()
        },
        known,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        (
            r2.model.params,
            r2.model.params_from.as_deref(),
            r2.model.macs
        ),
        (Some(100), Some("architecture"), Some(12_345))
    );

    let d = tempdir("profile-write");
    let (json, md) = profile::write(&r, &d).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 4);
    assert_eq!(v["execution_provider"], "CPUExecutionProvider");
    assert!(std::fs::read_to_string(md).unwrap().contains("| 4 | 2 |"));
}

#[test]
fn profile_uses_the_batch_a_model_fixes() {
    let Some(rt) = ort_runtime("profile_uses_the_batch_a_model_fixes") else {
        return;
    };
    use nas_pipe::run::profile::Plan;
    use nas_pipe::stages::profile::{self, Known};
    let plan = Plan {
        batch_sizes: vec![1, 32],
        threads: vec![1],
        warmup: 1,
        runs: 3,
    };
    let r = profile::run(
        rt,
        &test_model("fixed_batch.onnx"),
        &plan,
        Known::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0].batch, 2);
    assert_eq!(r.plan.batch_sizes, vec![2]);
    assert_eq!(
        r.notes,
        vec!["the model fixes the batch at 2; profiled batch 2 instead of 1,32".to_string()]
    );
    assert_eq!(r.model.params, Some(15));
}

#[test]
fn profile_command_prints_the_table() {
    if ort_runtime("profile_command_prints_the_table").is_none() {
        return;
    }
    let d = tempdir("profile-cli");
    let out = bin()
        .args([
            "profile",
            "tests/data/tiny_cnn.onnx",
            "--batch-sizes",
            "1,2",
        ])
        .args(["--threads", "1", "--warmup", "1", "--runs", "3", "--out"])
        .arg(&d)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("# Profile: tiny_cnn.onnx\n"), "{stdout}");
    assert!(stdout.contains("| 2 | 1 |"), "{stdout}");
    assert!(stdout.contains("162 params (initializers)"), "{stdout}");
    assert!(d.join("profile.json").is_file() && d.join("profile.md").is_file());
}

/// Issue #22: profiling a run's `model.onnx` overwrote that run's `profile.json`. Without
/// `--out`, `profile MODEL.onnx` only prints.
#[test]
fn profile_of_a_model_file_writes_nothing_without_out() {
    if ort_runtime("profile_of_a_model_file_writes_nothing_without_out").is_none() {
        return;
    }
    let d = tempdir("profile-no-out");
    let model = d.join("model.onnx");
    std::fs::copy("tests/data/tiny_cnn.onnx", &model).unwrap();
    std::fs::write(d.join("profile.json"), "the run's own profile").unwrap();
    let out = bin()
        .arg("profile")
        .arg(&model)
        .args(["--batch-sizes", "1", "--warmup", "1", "--runs", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("# Profile: model.onnx\n"), "{stdout}");
    assert!(!stdout.contains("written to"), "{stdout}");
    let kept = std::fs::read_to_string(d.join("profile.json")).unwrap();
    assert_eq!(kept, "the run's own profile");
    assert!(!d.join("profile.md").exists());
}

#[test]
fn profile_command_errors_exit_2() {
    let d = tempdir("profile-errors");
    let fake = d.join("libonnxruntime.so");
    std::fs::write(&fake, "not a library").unwrap();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["README.md".into()],
            "nas-pipe: README.md: not an ONNX model: it does not start like an ONNX protobuf\n"
                .into(),
        ),
        (
            vec!["missing.onnx".into()],
            "nas-pipe: missing.onnx: No such file or directory (os error 2)\n".into(),
        ),
        (
            vec!["tests/data/linear.onnx".into(), "--batch-sizes".into(), "1,0".into()],
            "nas-pipe: --batch-sizes must be a comma-separated list of numbers ≥ 1, got 1,0\n"
                .into(),
        ),
        (
            vec![
                "tests/data/linear.onnx".into(),
                "--ort-lib".into(),
                "/nonexistent/libonnxruntime.so".into(),
            ],
            "nas-pipe: cannot load ONNX Runtime; tried:\n  --ort-lib (/nonexistent/libonnxruntime.so): no such file\ninstall it with `pip install onnxruntime==1.32.0` (scripts/test.sh puts it in .venv/), or pass --ort-lib PATH or set ORT_DYLIB_PATH to libonnxruntime.so\n".into(),
        ),
    ];
    for (args, expected) in cases {
        let out = bin().arg("profile").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{args:?}");
    }
    // A file that is not a library, and a library that is not ONNX Runtime.
    let mut libs = vec![(fake, "cannot load ONNX Runtime; tried:\n  --ort-lib (")];
    let libm = PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6");
    if libm.is_file() {
        libs.push((
            libm,
            "does not export OrtGetApiBase: not an ONNX Runtime library",
        ));
    }
    for (lib, expected) in libs {
        let out = bin()
            .args(["profile", "tests/data/linear.onnx", "--ort-lib"])
            .arg(&lib)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains("pip install onnxruntime==1.32.0"),
            "{stderr}"
        );
    }
}

/// RUSTSEC-2024-0437: protobuf 3.4.0 can overflow the stack parsing untrusted bytes. Models
/// from users go to ONNX Runtime's parser (and the bounded reader in
/// `runtime/model_file.rs`), never to the `protobuf` crate.
#[test]
fn rustsec_2024_0437_user_models_never_reach_the_protobuf_crate() {
    let mut files = vec![
        root().join("src/stages/profile.rs"),
        root().join("src/stages/validate.rs"),
    ];
    for e in std::fs::read_dir(root().join("src/runtime")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for needle in [
            "protobuf::",
            "onnx_protobuf",
            "parse_from_bytes",
            "parse_from_reader",
        ] {
            assert!(!text.contains(needle), "{} mentions {needle}", f.display());
        }
    }
    let audit = std::fs::read_to_string(root().join(".cargo/audit.toml")).unwrap();
    assert!(audit.contains("\"RUSTSEC-2024-0437\""));
}

/// Whole-model parity in ONNX Runtime (nas-pipe's own runtime module): DARTS_V2 at C = 16,
/// 8 cells and the NAS-Bench-201 example, BN statistics perturbed so folding matters, 1,000
/// random images: the largest logit difference stays under 1e-4 and every top-1 agrees,
/// with BN folded and not.
#[test]
fn whole_model_parity_on_1000_images() {
    use nas_pipe::nets::export::{Options, export};
    use nas_pipe::nets::model::{Mode, Model};
    let Some(rt) = ort_runtime("whole_model_parity_on_1000_images") else {
        return;
    };
    let dev = candle_core::Device::Cpu;
    let (n, chunk) = (1000usize, 100usize);
    for (file, g, ov) in [
        ("schemas/darts.ron", "DARTS_V2", with_size(16, 8)),
        (
            "schemas/nas-bench-201.ron",
            NB201_EXAMPLE,
            Overrides::default(),
        ),
    ] {
        let s = load_space(file, ov);
        let net = s.build(&arch(&s, g));
        let m = Model::new(&net, &dev, 3, false).unwrap();
        perturb_batch_norms(&m.store, 7);
        let x = candle_core::Tensor::randn(0f32, 1., (n, 3, 32, 32), &dev).unwrap();
        let mut ours: Vec<Vec<f32>> = Vec::new();
        for c in 0..n / chunk {
            let xb = x.narrow(0, c * chunk, chunk).unwrap();
            ours.extend(
                m.forward(&xb, Mode::Eval)
                    .unwrap()
                    .logits
                    .to_vec2::<f32>()
                    .unwrap(),
            );
        }
        let meta = test_metadata();
        for fold in [true, false] {
            let opts = Options {
                fold_batch_norm: fold,
                ..Options::default()
            };
            let bytes = export(&m, &meta, &opts).unwrap();
            let mut session = nas_pipe::runtime::Session::from_bytes(rt, &bytes, 2).unwrap();
            let (mut max, mut agree) = (0f32, 0usize);
            for c in 0..n / chunk {
                let xb = x.narrow(0, c * chunk, chunk).unwrap();
                let flat = xb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let theirs = session.run(&flat, &[chunk, 3, 32, 32]).unwrap();
                assert_eq!(theirs.shape, [chunk, 10]);
                for (i, row) in ours[c * chunk..(c + 1) * chunk].iter().enumerate() {
                    let other = &theirs.data[i * 10..(i + 1) * 10];
                    let top = |r: &[f32]| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
                    agree += usize::from(top(row) == top(other));
                    for (a, b) in row.iter().zip(other) {
                        max = max.max((a - b).abs());
                    }
                }
            }
            eprintln!(
                "{file} {g} fold {fold}: max abs logit diff {max:e}, top-1 agreement {agree}/{n}"
            );
            assert!(max < 1e-4, "{file} fold {fold}: max abs diff {max}");
            assert_eq!(agree, n, "{file} fold {fold}");
        }
    }
}

/// `nas-pipe validate`: the exported model agrees with Candle within the pipeline's
/// tolerances (exit 0, `validation.json`); a tolerance no float computation meets fails the
/// stage with exit code 1; without an exported model it says to export first.
#[test]
fn validate_stage_compares_onnx_runtime_with_candle() {
    if ort_runtime("validate_stage_compares_onnx_runtime_with_candle").is_none() {
        return;
    }
    let dir = tempdir("validate");
    let p = train_pipeline(
        &dir,
        "v",
        8,
        "epochs: 1,\n    ),\n    validate: Validate(samples: 20, max_abs_diff: 1e-4, min_top1_agreement: 1.0,",
    );
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("epochs: 3, ", "");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("o");
    let cmd = |args: &[&str], pipeline: &Path| {
        let mut c = bin();
        c.arg(args[0])
            .arg(pipeline)
            .args(&args[1..])
            .arg("--out")
            .arg(&out);
        c.output().unwrap()
    };
    let o = cmd(&["validate"], &p);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nas-pipe export"));
    run_ok(
        bin()
            .args(["train"])
            .arg(&p)
            .args(["--genotype", "DARTS_V2", "--out"])
            .arg(&out),
    );
    run_ok(bin().args(["export"]).arg(&p).arg("--out").arg(&out));
    let o = cmd(&["validate"], &p);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("v/validation.json")).unwrap()).unwrap();
    assert_eq!(v["samples"], 20);
    assert_eq!(v["passed"], true);
    assert!(v["max_abs_diff"].as_f64().unwrap() < 1e-4);
    assert_eq!(v["top1_agreement"], 1.0);
    assert_eq!(v["ort_accuracy"], v["candle_accuracy"]);
    // A model whose input is not the retrained network's is refused before any image is
    // run, naming it and both inputs.
    let edited = dir.join("two-inputs.onnx");
    let bytes = std::fs::read(out.join("v/model.onnx")).unwrap();
    let two_inputs = with_graph(&bytes, |g| {
        let mut extra = g.input[0].clone();
        extra.name = "extra".into();
        g.input.push(extra);
    });
    std::fs::write(&edited, two_inputs).unwrap();
    let resolved =
        nas_pipe::pipeline::resolve::load(&mut nas_pipe::spec::Sources::default(), &p).unwrap();
    let retrain = out.join("v/retrain");
    let weights = retrain.join(nas_pipe::run::dir::model_file::LAST);
    let cpu = candle_core::Device::Cpu;
    let e = nas_pipe::stages::validate::compare(&resolved, &retrain, &weights, &edited, &cpu, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{}: the network was retrained on 3×8×8 images but the graph has 2 inputs \
             (input, extra), not one",
            edited.display()
        )) && e.contains("`nas-pipe export PIPELINE`"),
        "{e}"
    );
    // `profile PIPELINE` profiles the exported model into the run folder, with the
    // architecture's counts from the model card.
    let o = bin()
        .args(["profile"])
        .arg(&p)
        .args([
            "--batch-sizes",
            "1,4",
            "--threads",
            "1",
            "--warmup",
            "1",
            "--runs",
            "5",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prof: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("v/profile.json")).unwrap()).unwrap();
    let card = nas_pipe::run::retrain::load_model(&out.join("v/retrain"))
        .unwrap()
        .card;
    let text = prof.to_string();
    assert!(text.contains(&card.macs.to_string()), "{text}");
    assert!(out.join("v/profile.md").exists());
    // An unreachable tolerance fails the check (exit 1) and says so.
    let strict = dir.join("strict.ron");
    std::fs::write(
        &strict,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("max_abs_diff: 1e-4", "max_abs_diff: 0.0"),
    )
    .unwrap();
    let o = cmd(&["validate"], &strict);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAILED"));
}

// ---- Serving examples ----

/// Each ```` ```python ```` and ```` ```rust ```` block of `docs/serving.md`, as (language,
/// lines).
fn serving_snippets() -> Vec<(String, Vec<String>)> {
    let section = std::fs::read_to_string(root().join("docs/serving.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang @ ("python" | "rust")) = line.strip_prefix("```") {
            let body = lines
                .by_ref()
                .take_while(|l| *l != "```")
                .map(str::to_string)
                .collect();
            blocks.push((lang.to_string(), body));
        }
    }
    blocks
}

/// Whether `block` is a run of consecutive lines of `file`, all indented there by the same
/// whitespace.
fn is_excerpt(block: &[String], file: &str) -> bool {
    let lines: Vec<&str> = file.lines().collect();
    let Some(first) = block.first() else {
        return false;
    };
    (0..lines.len()).any(|i| {
        let Some(indent) = lines[i].strip_suffix(first.as_str()) else {
            return false;
        };
        indent.trim().is_empty()
            && i + block.len() <= lines.len()
            && block.iter().zip(&lines[i..]).all(|(b, l)| {
                (b.is_empty() && l.is_empty())
                    || l.strip_prefix(indent) == Some(b.as_str()) && !b.is_empty()
            })
    })
}

/// The serving snippets of `docs/serving.md` are excerpts of `examples/serve.py` and `examples/serve.rs`.
#[test]
fn serving_doc_snippets_are_excerpts_of_the_examples() {
    let blocks = serving_snippets();
    for lang in ["python", "rust"] {
        assert!(blocks.iter().any(|(l, _)| l == lang), "no {lang} snippet");
    }
    for (lang, body) in &blocks {
        let file = if lang == "python" {
            "examples/serve.py"
        } else {
            "examples/serve.rs"
        };
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(
            is_excerpt(body, &text),
            "this docs/serving.md snippet is not an excerpt of {file}:\n{}",
            body.join("\n")
        );
    }
}

/// (class name, probability) per line of a serving example's output.
fn served(out: &str) -> Vec<(String, f32)> {
    out.lines()
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split('\t').collect();
            assert!(f.len() == 3 && f[0] == i.to_string(), "{line:?}");
            (f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

/// `examples/serve.py` (onnxruntime) and `examples/serve.rs` (the `ort` crate), reading the
/// preprocessing from a freshly exported model's metadata, give the classes and
/// probabilities of Candle's eval-mode forward on the same uint8 images.
#[test]
fn serving_examples_agree_with_candle() {
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};
    const TEST: &str = "serving_examples_agree_with_candle";
    let Some(rt) = ort_runtime(TEST) else {
        return;
    };
    let python = root().join(".venv/bin/python");
    if !python.exists() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {TEST}: no {}; bash scripts/test.sh makes it",
            python.display()
        );
        return;
    }
    // target/<profile>/deps/tests-<hash> → target/<profile>/examples/serve
    let serve = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/serve");
    // `cargo test --test tests` builds no examples: refuse a missing or stale binary.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    assert!(
        modified(&serve) >= modified(&root().join("examples/serve.rs")),
        "{} is missing or older than examples/serve.rs: build it with \
         `cargo build --release --examples` (a plain `cargo test` does)",
        serve.display()
    );

    let dir = tempdir("serve");
    let p = train_pipeline(&dir, "sv", 8, "");
    let out = dir.join("o");
    run_ok(
        bin()
            .args(["train", "--genotype", "DARTS_V2"])
            .arg(&p)
            .arg("--out")
            .arg(&out),
    );
    run_ok(bin().args(["export"]).arg(&p).arg("--out").arg(&out));
    let model = out.join("sv/model.onnx");

    // Six 3x8x8 images, each channel a random colour plus noise (the synthetic classes
    // differ by colour), as a gzipped IDX file.
    let (n, c, s) = (6usize, 3usize, 8usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let colours: Vec<u8> = (0..n * c).map(|_| rng.random_range(16..200)).collect();
    let pixels: Vec<u8> = (0..n * c * s * s)
        .map(|i| colours[i / (s * s)] + rng.random_range(0..56))
        .collect();
    let mut idx = vec![0, 0, 8, 4];
    for d in [n, c, s, s] {
        idx.extend((d as u32).to_be_bytes());
    }
    idx.extend(&pixels);
    let idx_path = dir.join("images-idx3-ubyte.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&idx_path).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, &idx).unwrap();
    gz.finish().unwrap();

    // Candle, normalised with the model card's statistics.
    let rdir = out.join("sv/retrain");
    let trained = nas_pipe::run::retrain::load_model(&rdir).unwrap();
    let net = nas_pipe::nets::model::Model::new(&trained.net, &Device::Cpu, 0, false).unwrap();
    nas_pipe::run::retrain::load_weights(&net, &rdir.join("last.safetensors")).unwrap();
    let (mean, std) = (&trained.card.mean, &trained.card.std);
    let x: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f32 / 255.0 - mean[i / (s * s) % c]) / std[i / (s * s) % c])
        .collect();
    let x = Tensor::from_vec(x, (n, c, s, s), &Device::Cpu).unwrap();
    let logits = net
        .forward(&x, nas_pipe::nets::model::Mode::Eval)
        .unwrap()
        .logits
        .to_vec2::<f32>()
        .unwrap();
    let expected: Vec<(String, f32)> = logits
        .iter()
        .map(|row| {
            let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            let sum: f32 = row.iter().map(|v| (v - row[best]).exp()).sum();
            (trained.card.classes[best].clone(), 1.0 / sum)
        })
        .collect();

    let args = |c: &mut Command| {
        c.arg(&model)
            .arg("--idx-gz")
            .arg(&idx_path)
            .args(["--count", &n.to_string()]);
    };
    let mut py = Command::new(&python);
    py.arg(root().join("examples/serve.py"));
    args(&mut py);
    let mut rs = Command::new(&serve);
    rs.env("ORT_DYLIB_PATH", &rt.path);
    args(&mut rs);
    for (who, c) in [("serve.py", &mut py), ("serve.rs", &mut rs)] {
        let got = served(&run_ok(c));
        assert_eq!(got.len(), n, "{who}: {got:?}");
        for (i, ((gc, gp), (ec, ep))) in got.iter().zip(&expected).enumerate() {
            assert_eq!(gc, ec, "{who}, image {i}: {got:?} vs Candle {expected:?}");
            // Printed with 4 decimals.
            assert!(
                (gp - ep).abs() <= 1e-4,
                "{who}, image {i}: {got:?} vs Candle {expected:?}"
            );
        }
    }
}
