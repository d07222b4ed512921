//! Hostile input: include chains, files that are not files (specs, models, images, data
//! files), models whose metadata and graph disagree, and a deterministic mutation test
//! over every shipped spec and the ONNX reader. The bar is no panic, no abort and no
//! hang: every input is accepted or refused with an error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nas_pipe::pipeline::fuzz::{Kind, check_text};

use crate::common::{Rng, bin, fails, root, run_ok, tempdir, tensor_type, with_graph};

/// A space reading `include` from `dir`: NAS-Bench-201 with one extra library.
fn space_with_include(dir: &Path, include: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("schemas/nas-bench-201.ron"))
        .unwrap()
        .replacen(
            "SearchSpace(",
            &format!("SearchSpace(\n    include: [{include:?}],"),
            1,
        );
    let path = dir.join("space.ron");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn include_chains_are_bounded_and_read_once() {
    let dir = tempdir("include-chains");
    // 40 libraries, each including the next one twice (two spellings of the same path):
    // read naively, 2^40 reads.
    for i in 0..40 {
        let next = if i + 1 < 40 {
            format!("include: [\"lib{0}.ron\", \"./lib{0}.ron\"]", i + 1)
        } else {
            "include: []".into()
        };
        std::fs::write(dir.join(format!("lib{i}.ron")), format!("Library({next})")).unwrap();
    }
    let space = space_with_include(&dir, "lib9.ron");
    run_ok(bin().arg("check").arg(&space));
    let space = space_with_include(&dir, "lib0.ron");
    let e = fails(bin().arg("check").arg(&space));
    assert!(e.contains("includes nest deeper than 32 files"), "{e}");
    assert!(e.contains("space.ron → lib0.ron → lib1.ron → ("), "{e}");
}

#[test]
fn includes_of_devices_pipes_and_huge_files_are_refused() {
    let dir = tempdir("include-files");
    let e = fails(
        bin()
            .arg("check")
            .arg(space_with_include(&dir, "/dev/zero")),
    );
    assert!(e.contains("not a regular file"), "{e}");
    let fifo = dir.join("fifo.ron");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let e = fails(bin().arg("check").arg(space_with_include(&dir, "fifo.ron")));
        assert!(e.contains("not a regular file"), "{e}");
    }
    let big = dir.join("big.ron");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(17 << 20).unwrap();
    let e = fails(bin().arg("check").arg(space_with_include(&dir, "big.ron")));
    assert!(e.contains("larger than 16 MiB"), "{e}");
    let e = fails(bin().arg("check").arg("/dev/zero"));
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = tempdir("bom");
    let text = std::fs::read_to_string(root().join("pipelines/smoke.ron"))
        .unwrap()
        .replace("../schemas/", &format!("{}/schemas/", root().display()));
    let path = dir.join("smoke.ron");
    std::fs::write(&path, format!("\u{feff}{text}")).unwrap();
    run_ok(bin().arg("check").arg(&path));
}

#[test]
fn profile_flags_are_bounded() {
    let model = root().join("tests/data/tiny_cnn.onnx");
    let e = fails(
        bin()
            .arg("profile")
            .arg(&model)
            .args(["--threads", "100000"]),
    );
    assert!(
        e.contains("--threads: 100000 is more than the allowed 1024"),
        "{e}"
    );
    let e = fails(
        bin()
            .arg("profile")
            .arg(&model)
            .args(["--batch-sizes", "4000000000"]),
    );
    assert!(
        e.contains("--batch-sizes: 4000000000 is more than the allowed 65536"),
        "{e}"
    );
}

/// One mutation of `text`: a number replaced by an extreme value, a span deleted or
/// duplicated, two lines swapped, or a stray token inserted.
fn mutate(text: &str, rng: &mut Rng) -> String {
    const NUMBERS: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "7",
        "64",
        "65537",
        "4294967295",
        "18446744073709551615",
        "-1",
        "1e308",
        "-0.0",
        "NaN",
        "inf",
        "0.5",
    ];
    const TOKENS: &[&str] = &[
        "(", ")", "[", "]", ",", ":", "\"", "Some(", "//", "/*", "\u{feff}", "é", "None",
    ];
    let b = text.as_bytes();
    let at = |rng: &mut Rng| {
        let mut i = rng.below(b.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match rng.below(5) {
        0 => {
            let digits: Vec<usize> = (0..b.len())
                .filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()))
                .collect();
            if digits.is_empty() {
                return text.to_string();
            }
            let start = digits[rng.below(digits.len())];
            let end = (start..b.len())
                .find(|&i| !(b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e'))
                .unwrap_or(b.len());
            let n = NUMBERS[rng.below(NUMBERS.len())];
            format!("{}{n}{}", &text[..start], &text[end..])
        }
        1 | 2 => {
            let start = at(rng);
            let mut end = (start + 1 + rng.below(24)).min(b.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let span = &text[start..end];
            if rng.below(2) == 0 {
                format!("{}{}", &text[..start], &text[end..])
            } else {
                format!("{}{span}{span}{}", &text[..start], &text[start..])
            }
        }
        3 => {
            let mut lines: Vec<&str> = text.lines().collect();
            let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(i, j);
            lines.join("\n")
        }
        _ => {
            let i = at(rng);
            let t = TOKENS[rng.below(TOKENS.len())];
            format!("{}{t}{}", &text[..i], &text[i..])
        }
    }
}

fn shipped(dir: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

/// 30,000 mutants of the shipped pipelines and spaces (1 to 3 mutations each, seeded):
/// none panics. A failing case prints its number and text. Both kinds must have accepted
/// mutants, so the checks past parsing (resolve, compile, counts, estimates) are reached.
#[test]
fn mutated_specs_never_panic() {
    let pipelines = shipped("pipelines");
    let spaces = shipped("schemas");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let mut accepted = [0usize; 2];
    for case in 0..30_000 {
        let (kind, files) = if rng.below(3) == 0 {
            (Kind::Pipeline, &pipelines)
        } else {
            (Kind::Space, &spaces)
        };
        let (path, original) = &files[rng.below(files.len())];
        let mut text = original.clone();
        for _ in 0..1 + rng.below(3) {
            text = mutate(&text, &mut rng);
        }
        let t = text.clone();
        match std::panic::catch_unwind(|| check_text(path, t, kind)) {
            Ok(ok) => accepted[usize::from(kind == Kind::Space)] += usize::from(ok),
            Err(_) => failures.push(format!("case {case}, {}:\n{text}", path.display())),
        }
    }
    eprintln!(
        "30,000 mutants in {:.1} s; accepted: {} pipelines, {} spaces",
        t0.elapsed().as_secs_f64(),
        accepted[0],
        accepted[1]
    );
    assert!(
        failures.is_empty(),
        "{} panics; first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        accepted.iter().all(|&n| n > 0),
        "no mutant got past parsing: {accepted:?}"
    );
}

/// Mutants of the shipped test models through the ONNX reader: none panics.
#[test]
fn mutated_onnx_files_never_panic() {
    let mut rng = Rng(7);
    for name in ["tiny_cnn.onnx", "linear.onnx", "fixed_batch.onnx"] {
        let bytes = std::fs::read(root().join("tests/data").join(name)).unwrap();
        for _ in 0..2_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                match rng.below(3) {
                    0 => b[i] = rng.next() as u8,
                    1 => b.truncate(i),
                    _ => b.insert(i, rng.next() as u8),
                }
                if b.is_empty() {
                    break;
                }
            }
            let _ = nas_pipe::runtime::model_file::looks_like_onnx(&b);
            let _ = nas_pipe::runtime::model_file::initializers(&b);
        }
    }
}

/// Runs `c`, which must end within `secs` seconds as bad input (exit 2, never a panic's
/// 101, an abort or a hang); returns its stderr. A command still running is killed and
/// the test fails.
fn fails_within(c: &mut std::process::Command, secs: u64) -> String {
    use std::process::Stdio;
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() >= secs {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{c:?} still ran after {secs} s: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{c:?}: {err}");
    err
}

/// A FIFO at `path` (`None` where `mkfifo` is missing).
fn fifo(path: &Path) -> Option<PathBuf> {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    made.is_ok_and(|s| s.success()).then(|| path.to_path_buf())
}

/// A model `nas-pipe export` wrote: one epoch of retraining on 8×8 synthetic images.
pub(crate) fn exported_model(dir: &Path) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "hostile-predict",
    seed: 1,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 32, test: 16),
    space: "{}",
    retrain: Retrain(
        channels: 2, layers: 3, epochs: 1, batch_size: 16,
        optimizer: Sgd(lr: 0.05, weight_decay: 3e-4, grad_clip: 5.0),
    ),
    genotype: "DARTS_V2",
    export: Onnx(),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let p = dir.join("hostile-predict.ron");
    std::fs::write(&p, text).unwrap();
    run_ok(bin().arg("run").arg(&p).arg("--out").arg(dir));
    dir.join("hostile-predict/model.onnx")
}

/// `model` with its `input_shape` metadata replaced by `shape`: the entry is a top-level
/// field (14) of the ModelProto whose lengths take one byte each.
fn with_input_shape(model: &[u8], shape: &str) -> Vec<u8> {
    let key = b"\x0a\x0binput_shape\x12";
    let at = model.windows(key.len()).position(|w| w == key).unwrap();
    assert_eq!(model[at - 2], 0x72, "metadata_props is field 14");
    let value_len = at + key.len();
    let old = model[value_len] as usize;
    let mut out = model[..at - 1].to_vec();
    out.push((model[at - 1] as usize - old + shape.len()) as u8);
    out.extend_from_slice(&model[at..value_len]);
    out.push(shape.len() as u8);
    out.extend_from_slice(shape.as_bytes());
    out.extend_from_slice(&model[value_len + 1 + old..]);
    out
}

/// `predict` given what is not a model or not an image: exit 2 naming the file, in
/// seconds; a FIFO, named or found in a folder, is refused rather than read for ever.
#[test]
fn predict_refuses_hostile_models_and_images() {
    if crate::common::ort_runtime("predict_refuses_hostile_models_and_images").is_none() {
        return;
    }
    let dir = tempdir("hostile-predict");
    let model = exported_model(&dir);
    let png = dir.join("ok.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .save(&png)
        .unwrap();
    let predict = |model: &Path, image: &Path| {
        let mut c = bin();
        c.arg("predict").arg(model).arg(image);
        c
    };
    run_ok(&mut predict(&model, &png));

    let bytes = std::fs::read(&model).unwrap();
    let bad_models = [
        ("empty.onnx", Vec::new()),
        ("half.onnx", bytes[..bytes.len() / 2].to_vec()),
        ("text.onnx", b"ir_version: 7\n".to_vec()),
        ("wide.onnx", with_input_shape(&bytes, "[3,100000,100000]")),
    ];
    for (name, b) in &bad_models {
        let path = dir.join(name);
        std::fs::write(&path, b).unwrap();
        let e = fails_within(&mut predict(&path, &png), 60);
        assert!(e.contains(name), "{e}");
    }
    let e = fails_within(&mut predict(&dir.join("wide.onnx"), &png), 60);
    assert!(e.contains("at most 4096×4096 pixels"), "{e}");
    let e = fails_within(&mut predict(&dir, &png), 60);
    assert!(e.contains("not a regular file"), "{e}");

    let images = dir.join("images");
    std::fs::create_dir_all(images.join("none")).unwrap();
    std::fs::write(images.join("none/notes.txt"), "no images here").unwrap();
    std::fs::write(images.join("empty.png"), b"").unwrap();
    std::fs::write(images.join("text.jpg"), b"not a jpeg").unwrap();
    for (path, needle) in [
        (images.join("none"), "no image files in this folder"),
        (
            images.join("empty.png"),
            "empty.png: not an image: the file is empty",
        ),
        (
            images.join("text.jpg"),
            "text.jpg: not an image in a format",
        ),
        (images.join("missing.png"), "missing.png"),
    ] {
        let e = fails_within(&mut predict(&model, &path), 60);
        assert!(e.contains(needle), "{e}");
    }
    if let Some(f) = fifo(&images.join("pipe.png")) {
        let e = fails_within(&mut predict(&model, &f), 60);
        assert!(e.contains("pipe.png: not a regular file"), "{e}");
        let e = fails_within(&mut predict(&f, &png), 60);
        assert!(e.contains("pipe.png: not a regular file"), "{e}");
        let folder = dir.join("with-pipe");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(&png, folder.join("a.png")).unwrap();
        fifo(&folder.join("b.png")).unwrap();
        let e = fails_within(&mut predict(&model, &folder), 60);
        assert!(e.contains("b.png: not a regular file"), "{e}");
    }
    for top in ["0", "100001", "18446744073709551616"] {
        let e = fails_within(predict(&model, &png).args(["--top", top]), 60);
        assert!(e.contains("--top"), "{e}");
    }
}

/// `predict` on a model whose `input_shape` metadata its graph's input does not take (other
/// sizes, two inputs, integer pixels): exit 2 before any image is read, naming the model,
/// both shapes and `nas-pipe export`. A graph that leaves height and width dynamic takes
/// the metadata's size.
#[test]
fn predict_refuses_models_whose_metadata_and_graph_disagree() {
    if crate::common::ort_runtime("predict_refuses_models_whose_metadata_and_graph_disagree")
        .is_none()
    {
        return;
    }
    use onnx_protobuf::tensor_proto::DataType;
    use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
    let dir = tempdir("hostile-predict-input");
    let model = exported_model(&dir);
    // A FIFO as the image: read, it would block; refused by name, it proves nothing was
    // decoded before the model was refused.
    let image = fifo(&dir.join("never-read.png")).unwrap_or_else(|| dir.join("never-read.png"));
    let bytes = std::fs::read(&model).unwrap();
    let two_inputs = with_graph(&bytes, |g| {
        let mut extra = g.input[0].clone();
        extra.name = "extra".into();
        g.input.push(extra);
    });
    let bytes_in = with_graph(&bytes, |g| {
        g.input[0].name = "pixels".into();
        tensor_type(&mut g.input[0]).elem_type = DataType::UINT8 as i32;
        let cast = onnx_protobuf::NodeProto {
            op_type: "Cast".into(),
            input: vec!["pixels".into()],
            output: vec!["input".into()],
            attribute: vec![onnx_protobuf::AttributeProto {
                name: "to".into(),
                type_: onnx_protobuf::attribute_proto::AttributeType::INT.into(),
                i: DataType::FLOAT as i64,
                ..Default::default()
            }],
            ..Default::default()
        };
        g.node.insert(0, cast);
    });
    let cases = [
        (
            "bigger.onnx",
            with_input_shape(&bytes, "[3,16,16]"),
            "its `input_shape` metadata is [3, 16, 16] but the graph's input \"input\" is \
             [batch, 3, 8, 8], not [batch, 3, 16, 16]",
        ),
        (
            "two-inputs.onnx",
            two_inputs,
            "the graph has 2 inputs (input, extra), not one",
        ),
        (
            "uint8.onnx",
            bytes_in,
            "the graph's input \"pixels\" holds Uint8, not f32",
        ),
    ];
    for (name, b, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, b).unwrap();
        let mut c = bin();
        c.arg("predict").arg(&path).arg(&image);
        let e = fails_within(&mut c, 60);
        assert!(
            e.contains(&format!("{}: ", path.display()))
                && e.contains(needle)
                && e.contains("`nas-pipe export PIPELINE`")
                && !e.contains("never-read.png"),
            "{name}: {e}"
        );
    }

    // Height and width left dynamic: the metadata's 8×8 is taken.
    let dynamic = dir.join("dynamic.onnx");
    let b = with_graph(&bytes, |g| {
        let dims = &mut tensor_type(&mut g.input[0])
            .shape
            .mut_or_insert_default()
            .dim;
        for (d, name) in dims[2..].iter_mut().zip(["H", "W"]) {
            d.value = Some(Dim::DimParam(name.into()));
        }
    });
    std::fs::write(&dynamic, b).unwrap();
    let png = dir.join("ok.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .save(&png)
        .unwrap();
    run_ok(bin().arg("predict").arg(&dynamic).arg(&png));
}

/// Training data with a pipe or a folder where a file belongs (a FIFO named like an image
/// in a class folder, a FIFO or a folder as a CSV manifest, a manifest row naming a folder,
/// a FIFO as an `.npy` array): exit 2 naming it, in seconds, never blocked on the pipe.
#[test]
fn data_sources_refuse_pipes_and_folders_where_files_belong() {
    let dir = tempdir("hostile-data");
    crate::data::tiny_folder(&dir);
    if fifo(&dir.join("imgs/train/class2/pipe.png")).is_none() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED FIFOs as data: no mkfifo");
        return;
    }
    let pipeline = |data: &str, name: &str| {
        let file = crate::data::tiny_pipeline_as(&dir, "size: 8, channels: 3", name);
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace(r#"ImageFolder(dir: "imgs","#, data);
        std::fs::write(&file, text).unwrap();
        file
    };
    let command = |cmd: &str, file: &Path| {
        let mut c = bin();
        c.arg(cmd).arg(file);
        if cmd == "run" {
            let out = dir.join("out").join(file.file_stem().unwrap());
            c.arg("--out").arg(out);
        }
        c
    };
    let refused = |cmd: &str, file: &Path, needles: &[&str]| {
        let e = fails_within(&mut command(cmd, file), 120);
        for n in needles {
            assert!(e.contains(n), "{cmd} {}: no {n:?} in {e}", file.display());
        }
    };

    let folder = pipeline(r#"ImageFolder(dir: "imgs","#, "folder.ron");
    refused("run", &folder, &["class2/pipe.png: not a regular file"]);

    let csv = pipeline(r#"Csv(file: "m.csv", test: "t.csv","#, "csv.ron");
    let (m, t) = (dir.join("m.csv"), dir.join("t.csv"));
    std::fs::write(&t, "imgs/test/class0/0.png,0\n").unwrap();
    fifo(&m).unwrap();
    refused(
        "check",
        &csv,
        &["m.csv: cannot open the manifest: not a regular file"],
    );
    std::fs::remove_file(&m).unwrap();
    std::fs::write(&m, "imgs/train/class0/0.png,0\nimgs/train/class1,1\n").unwrap();
    std::fs::remove_file(&t).unwrap();
    fifo(&t).unwrap();
    refused(
        "check",
        &csv,
        &["t.csv: cannot open the manifest: not a regular file"],
    );
    std::fs::remove_file(&t).unwrap();
    std::fs::create_dir(&t).unwrap();
    refused(
        "check",
        &csv,
        &["t.csv: cannot open the manifest: not a regular file"],
    );
    std::fs::remove_dir(&t).unwrap();
    std::fs::write(&t, "imgs/test/class0/0.png,0\n").unwrap();
    refused(
        "run",
        &csv,
        &["train/class1: not a regular file", "manifest row 2"],
    );

    let npy = pipeline(
        r#"Npy(images: "x.npy", labels: "y.npy", classes: ["a", "b"],"#,
        "npy.ron",
    );
    crate::data::write_npy(
        std::fs::File::create(dir.join("y.npy")).unwrap(),
        &[2],
        &[0u8, 1],
    );
    fifo(&dir.join("x.npy")).unwrap();
    refused(
        "run",
        &npy,
        &["x.npy: cannot open the array file: not a regular file"],
    );
}

/// A multi-trial pipeline whose search needs no data (a tabular evaluator).
fn trials_pipeline() -> PathBuf {
    root().join("pipelines/nb201-random.ron")
}

/// `worker` with storages a hostile user gives: malformed, unsupported, a password or a
/// line break in the URL, a SQLite file where no folder can be made, PostgreSQL on a
/// closed port: exit 2 in seconds, naming the URL or file and what to write.
#[test]
fn worker_refuses_hostile_storages() {
    let dir = tempdir("hostile-worker");
    let file = dir.join("file");
    std::fs::write(&file, "a file, not a folder").unwrap();
    let under_file = format!("sqlite:{}", file.join("ledger.sqlite").display());
    let file = file.display().to_string();
    let cases = [
        ("redis://127.0.0.1/0", "neither sqlite:PATH nor postgres://"),
        ("sqlite:", "names no file"),
        (
            "postgres://nas@127.0.0.1:99999/nas",
            "is not a PostgreSQL URL",
        ),
        ("postgres://nas:secret@127.0.0.1/nas", "PGPASSWORD"),
        (
            "postgres://nas@127.0.0.1/nas\nrm -rf ~",
            "control character at position 29",
        ),
        (under_file.as_str(), file.as_str()),
        ("sqlite:/proc/nas-pipe/ledger.sqlite", "/proc/nas-pipe"),
        ("postgres://nas@127.0.0.1:1/nas", "cannot connect"),
    ];
    for (url, needle) in cases {
        let e = fails_within(
            bin()
                .arg("worker")
                .arg(trials_pipeline())
                .arg("--out")
                .arg(&dir)
                .args(["--idle-timeout", "5s", "--storage", url]),
            30,
        );
        assert!(e.contains(needle) && !e.contains("secret"), "{url}: {e}");
    }
}

/// Issue #20: `worker` given a SQLite ledger in a folder that does not exist (a typo, or
/// another `--out` than the proposer's) exits 2 at once, naming the path and what to give
/// it, instead of waiting for its idle timeout (here none: it would wait for ever); it
/// creates nothing. The same goes for the run folder's default ledger.
#[test]
fn worker_with_a_sqlite_ledger_in_a_missing_folder_fails_at_once() {
    let dir = tempdir("hostile-worker-missing");
    let missing = dir.join("no-such-folder");
    let ledger = missing.join("ledger.sqlite");
    let worker = |extra: &[&str]| {
        let mut c = bin();
        c.arg("worker")
            .arg(trials_pipeline())
            .arg("--out")
            .arg(&missing)
            .args(["--idle-timeout", "0"])
            .args(extra);
        fails_within(&mut c, 30)
    };
    let url = format!("sqlite:{}", ledger.display());
    for e in [worker(&["--storage", &url]), worker(&[])] {
        assert!(
            e.contains(&format!("the folder {}", missing.display()))
                && e.contains("does not exist")
                && e.contains("--storage and --out of its proposer"),
            "{e}"
        );
    }
    assert!(!missing.exists());
}

/// `launch` with arguments a hostile user gives: worker counts out of range, a `--time`
/// or URL that would put a line of their own into the script, a pipeline that fails
/// `check` or has no multi-trial search: exit 2 naming the argument. An `--output` file
/// already there is never replaced (the same text again is no change).
#[test]
fn launch_refuses_hostile_arguments_and_never_overwrites() {
    let dir = tempdir("hostile-launch");
    let launch = |storage: &str, args: &[&str]| {
        let mut c = bin();
        c.args(["launch", "slurm"])
            .arg(trials_pipeline())
            .args(["--storage", storage])
            .args(args);
        c
    };
    let db = "postgres://nas@db.example/nas";
    let slurm = |args: &[&str]| launch(db, args);
    for (args, needle) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--workers", "100001"], "--workers"),
        (&["--workers", "2", "--cpus", "0"], "--cpus"),
        (
            &["--workers", "2", "--time", "1:00\nrm -rf ~"],
            "not a Slurm time",
        ),
    ] {
        let e = fails_within(&mut slurm(args), 30);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    let e = fails_within(
        &mut launch("postgres://nas@db/nas\nrm -rf ~", &["--workers", "2"]),
        30,
    );
    assert!(e.contains("control character"), "{e}");
    let broken = dir.join("broken.ron");
    std::fs::write(&broken, "Pipeline(name: \"x\", seed: -1)").unwrap();
    let e = fails_within(
        bin().args(["launch", "k8s"]).arg(&broken).args([
            "--workers",
            "2",
            "--image",
            "i",
            "--volume",
            "v",
        ]),
        30,
    );
    assert!(e.contains("broken.ron:1:"), "{e}");
    let e = fails_within(
        bin()
            .args(["launch", "slurm"])
            .arg(root().join("pipelines/smoke.ron"))
            .args(["--workers", "2", "--storage", "postgres://nas@db/nas"]),
        30,
    );
    assert!(e.contains("only those run on workers"), "{e}");

    let out = dir.join("search.sbatch");
    std::fs::write(&out, "#!/bin/bash\n# my own script\n").unwrap();
    let e = fails_within(slurm(&["--workers", "2", "-o"]).arg(&out), 30);
    assert!(
        e.contains("search.sbatch: already exists") && e.contains("give another --output"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "#!/bin/bash\n# my own script\n"
    );
    let e = fails_within(slurm(&["--workers", "2", "-o"]).arg(&dir), 30);
    assert!(e.contains("already exists"), "{e}");
    let fresh = dir.join("fresh.sbatch");
    run_ok(slurm(&["--workers", "2", "-o"]).arg(&fresh));
    let written = std::fs::read(&fresh).unwrap();
    run_ok(slurm(&["--workers", "2", "-o"]).arg(&fresh));
    assert_eq!(std::fs::read(&fresh).unwrap(), written);
    let e = fails_within(slurm(&["--workers", "3", "-o"]).arg(&fresh), 30);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&fresh).unwrap(), written);
}
