//! `nas-pipe predict`: a model exported from an image-folder run classifies the test
//! folder's images (colour, mixed sizes, PNG and JPEG) exactly as `eval` scores them, since
//! both prepare each image with the same function; bad models and images exit 2 naming
//! the file.

use std::path::{Path, PathBuf};

use crate::common::{bin, fails, ort_runtime, root, run_ok, tempdir, tensor_type, with_graph};

const CLASSES: [[u8; 3]; 3] = [[200, 40, 40], [40, 200, 40], [40, 40, 200]];

/// `imgs/{train,test}/class<c>/<k>.{png,jpg}`: noisy images of each class's colour, of
/// sizes 10..=17 by 8..=12 pixels, so that every one is resized and cropped.
fn folder(dir: &Path) {
    let mut seed = 7u32;
    let mut noise = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 24) as u8 % 60
    };
    for (part, n) in [("train", 16), ("test", 7)] {
        for (c, rgb) in CLASSES.iter().enumerate() {
            for k in 0..n {
                let (w, h) = (10 + k as u32 % 8, 8 + k as u32 % 5);
                let img = image::RgbImage::from_fn(w, h, |_, _| {
                    image::Rgb(rgb.map(|v| v.saturating_add(noise()).saturating_sub(30)))
                });
                let ext = if k % 2 == 0 { "png" } else { "jpg" };
                let path = dir.join(format!("imgs/{part}/class{c}/{k}.{ext}"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                img.save(&path).unwrap();
            }
        }
    }
}

fn pipeline(dir: &Path) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "predict",
    seed: 1,
    device: Cpu,
    data: ImageFolder(dir: "imgs", image: (size: 8, channels: 3, resize: Crop)),
    space: "{}",
    retrain: Retrain(
        channels: 4, layers: 3, epochs: 2, batch_size: 16,
        optimizer: Sgd(lr: 0.05, weight_decay: 3e-4, grad_clip: 5.0),
    ),
    genotype: "DARTS_V2",
    export: Onnx(),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join("predict.ron");
    std::fs::write(&path, text).unwrap();
    path
}

/// The class of a predicted image from its folder name (`class2` → 2).
fn class_of(line: &serde_json::Value) -> usize {
    let image = Path::new(line["image"].as_str().unwrap());
    let folder = image
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    folder.trim_start_matches("class").parse().unwrap()
}

#[test]
fn predict_on_the_test_folder_agrees_with_eval() {
    if ort_runtime("predict_on_the_test_folder_agrees_with_eval").is_none() {
        return;
    }
    let dir = tempdir("predict");
    folder(&dir);
    let file = pipeline(&dir);
    let out = dir.join("out");
    run_ok(bin().arg("run").arg(&file).arg("--out").arg(&out));
    let model = out.join("predict/model.onnx");
    let eval = run_ok(bin().arg("eval").arg(&file).arg("--out").arg(&out));
    let eval_acc: f64 = eval
        .split("test accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {eval}"));

    let test = dir.join("imgs/test");
    let json = run_ok(
        bin()
            .args(["predict", "--json", "--top", "2", "--batch", "5"])
            .arg(&model)
            .arg(&test),
    );
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 21, "{json}");
    let mut right = 0;
    for l in &lines {
        let truth = format!("class{}", class_of(l));
        let top = l["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        let (p0, p1) = (
            top[0]["probability"].as_f64().unwrap(),
            top[1]["probability"].as_f64().unwrap(),
        );
        assert!(p0 >= p1 && p0 <= 1.0 && p1 >= 0.0, "{l}");
        assert!(
            top[0]["class"].as_str().unwrap().starts_with("class"),
            "{l}"
        );
        right += usize::from(top[0]["class"] == truth);
    }
    // Image by image, predict's probabilities are ONNX Runtime's on the very tensors the
    // training loader made of the same files.
    let mut sources = nas_pipe::spec::Sources::default();
    let p = nas_pipe::pipeline::resolve::load(&mut sources, &file).unwrap();
    let loaded = nas_pipe::data::read(&p.spec.data, p.data_dir.as_deref(), 1).unwrap();
    let test_set = loaded.test.unwrap();
    assert_eq!(test_set.len(), lines.len());
    let rt = ort_runtime("predict").unwrap();
    let mut session = nas_pipe::runtime::Session::from_file(rt, &model, 1).unwrap();
    let pre = nas_pipe::stages::predict::Preprocess::of(&session, &model).unwrap();
    for (i, l) in lines.iter().enumerate() {
        let mut x = vec![0.0; test_set.image_len()];
        pre.norm.apply(test_set.image(i), &mut x);
        let logits = session.run(&x, &[1, 3, 8, 8]).unwrap();
        let probs = nas_pipe::stages::predict::softmax(&logits.data);
        let top = &l["top"][0];
        let k = top["index"].as_u64().unwrap() as usize;
        assert_eq!(
            test_set.label(i) as usize,
            class_of(l),
            "image {i} in another order"
        );
        assert!(
            (probs[k] as f64 - top["probability"].as_f64().unwrap()).abs() < 1e-6
                && probs.iter().all(|&q| q <= probs[k]),
            "image {i}: {probs:?} vs {l}"
        );
    }
    let acc = 100.0 * right as f64 / lines.len() as f64;
    assert_eq!(
        format!("{acc:.2}"),
        format!("{eval_acc:.2}"),
        "predict vs eval:\n{json}\n{eval}"
    );

    // Text: one line per image, the path then `class probability%` pairs.
    let one = test.join("class1/0.png");
    let text = run_ok(
        bin()
            .arg("predict")
            .arg(&model)
            .arg(&one)
            .arg(test.join("class2/1.jpg")),
    );
    let first = text.lines().next().unwrap();
    let fields: Vec<&str> = first.split('\t').collect();
    assert_eq!(fields[0], one.display().to_string());
    assert!(
        fields[1].starts_with("class") && fields[1].ends_with('%'),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2);

    serve_py_agrees(&model, &lines);

    // Not an image, a missing file, an empty folder: exit 2 naming it.
    let bad = dir.join("b.png");
    std::fs::write(&bad, b"not an image").unwrap();
    for (arg, needle) in [(bad, "b.png"), (dir.join("missing.jpg"), "missing.jpg")] {
        let e = fails(bin().arg("predict").arg(&model).arg(&arg));
        assert!(e.contains(needle), "{e}");
    }
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let e = fails(bin().arg("predict").arg(&model).arg(dir.join("empty")));
    assert!(e.contains("no image files in this folder"), "{e}");
}

#[test]
fn predict_refuses_foreign_models_naming_them() {
    if ort_runtime("predict_refuses_foreign_models_naming_them").is_none() {
        return;
    }
    let dir = tempdir("predict-foreign");
    let png = dir.join("a.png");
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
        .save(&png)
        .unwrap();
    // Models nas-pipe did not export record no preprocessing.
    for m in ["tiny_cnn.onnx", "linear.onnx"] {
        let e = fails(
            bin()
                .arg("predict")
                .arg(root().join("tests/data").join(m))
                .arg(&png),
        );
        assert!(
            e.contains(m) && e.contains("records no `input_shape`"),
            "{e}"
        );
    }
    let e = fails(bin().arg("predict").arg(dir.join("none.onnx")).arg(&png));
    assert!(e.contains("none.onnx"), "{e}");
}

/// Issue #20: a model whose graph fixes its batch (here at 2) takes three images with
/// `--batch 1`, `2` and `32`: predict runs them two at a time, fills the last run up, and
/// every image gets the probabilities the same model with a dynamic batch gives it.
#[test]
fn predict_runs_a_fixed_batch_model_in_batches_of_its_size() {
    if ort_runtime("predict_runs_a_fixed_batch_model_in_batches_of_its_size").is_none() {
        return;
    }
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    let dir = tempdir("predict-fixed-batch");
    let model = crate::hostile::exported_model(&dir);
    let fixed = dir.join("fixed.onnx");
    let bytes = with_graph(&std::fs::read(&model).unwrap(), |g| {
        let dims = &mut tensor_type(&mut g.input[0])
            .shape
            .mut_or_insert_default()
            .dim;
        dims[0].value = Some(Dim::DimValue(2));
    });
    std::fs::write(&fixed, bytes).unwrap();
    let images: Vec<PathBuf> = (0..3u32)
        .map(|i| {
            let p = dir.join(format!("{i}.png"));
            image::RgbImage::from_fn(8, 8, |x, y| {
                image::Rgb([(x * 30 + i * 50) as u8, (y * 20) as u8, (i * 80) as u8])
            })
            .save(&p)
            .unwrap();
            p
        })
        .collect();
    // Per image, its path and each class's probability, by class index.
    let predict = |m: &Path, batch: &str| -> Vec<(String, Vec<f64>)> {
        let out = run_ok(
            bin()
                .args(["predict", "--json", "--top", "4", "--batch", batch])
                .arg(m)
                .args(&images),
        );
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let mut probs = vec![f64::NAN; 4];
                for t in v["top"].as_array().unwrap() {
                    probs[t["index"].as_u64().unwrap() as usize] =
                        t["probability"].as_f64().unwrap();
                }
                (v["image"].as_str().unwrap().to_string(), probs)
            })
            .collect()
    };
    let want = predict(&model, "32");
    assert_eq!(want.len(), 3);
    for batch in ["1", "2", "32"] {
        let got = predict(&fixed, batch);
        assert_eq!(got.len(), 3, "--batch {batch}");
        for ((path, p), (want_path, q)) in got.iter().zip(&want) {
            assert_eq!(path, want_path);
            assert!(
                p.iter().zip(q).all(|(a, b)| (a - b).abs() < 1e-5),
                "--batch {batch}, {path}: {p:?} vs {q:?}"
            );
        }
    }
}

/// `examples/serve.py` (Pillow) on the same files gives predict's classes and, up to the
/// rounding of resized and JPEG pixels, its probabilities. Skipped without `.venv/` Pillow.
fn serve_py_agrees(model: &Path, lines: &[serde_json::Value]) {
    let python = root().join(".venv/bin/python");
    let has_pil = std::process::Command::new(&python)
        .args(["-c", "import PIL"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pil {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED serve.py on image files: no Pillow in .venv/; bash scripts/test.sh installs it"
        );
        return;
    }
    let files: Vec<&str> = lines.iter().map(|l| l["image"].as_str().unwrap()).collect();
    let out = run_ok(
        std::process::Command::new(&python)
            .arg(root().join("examples/serve.py"))
            .arg(model)
            .args(&files),
    );
    let mut agree = 0;
    for (line, l) in out.lines().zip(lines) {
        let f: Vec<&str> = line.split('\t').collect();
        let p: f64 = f[2].parse().unwrap();
        let top = &l["top"][0];
        let ours = top["probability"].as_f64().unwrap();
        assert!((p - ours).abs() < 0.05, "{line} vs {l}");
        agree += usize::from(f[1] == top["class"].as_str().unwrap());
    }
    assert_eq!(out.lines().count(), lines.len(), "{out}");
    assert!(
        agree + 1 >= lines.len(),
        "{agree} of {} classes agree:\n{out}",
        lines.len()
    );
}
