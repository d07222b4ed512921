//! Spec checks: the shipped spaces and their counts, genotypes, hierarchical spaces,
//! malformed specs and random mutations of them, `show`, `--help` and CLI errors.

use std::path::{Path, PathBuf};

use nas_pipe::space::genotype::{Genotype, PUBLISHED};
use nas_pipe::space::{self, Overrides};
use nas_pipe::spec::pipeline;
use nas_pipe::spec::space::{Input, SearchSpace};
use nas_pipe::spec::{Source, Sources};

use crate::common::*;

// ---- Reference numbers (the DARTS and NAS-Bench-201 papers and code) ----

#[test]
fn darts_search_network_has_1930618_weights_and_224_alphas() {
    let s = load_space("schemas/darts.ron", with_size(16, 8));
    assert_eq!(s.supernet_cost().params, 1_930_618);
    assert_eq!(s.alphas(), 224);
}

#[test]
fn darts_v2_at_c36_l20_has_3349342_params() {
    let s = load_space("schemas/darts.ron", with_size(36, 20));
    assert_eq!(s.discrete_cost(&arch(&s, "DARTS_V2")).params, 3_349_342);
    // Stem 108 channels; cells output 144 / 288 / 576 at 32² / 16² / 8².
    let outs: Vec<_> = s
        .cell_layers()
        .map(|(_, l)| (l.output.c, l.output.h))
        .collect();
    assert_eq!(outs[0], (144, 32));
    assert_eq!(outs[6], (288, 16));
    assert_eq!(outs[19], (576, 8));
    assert_eq!(s.network.layers[0].output.c, 108);
}

#[test]
fn nb201_counts() {
    let s = load_space("schemas/nas-bench-201.ron", Overrides::default());
    assert_eq!(s.discrete_cost(&arch(&s, NB201_EXAMPLE)).params, 802_426);
    for op in ["none", "skip_connect"] {
        let g = format!("|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|");
        assert_eq!(s.discrete_cost(&arch(&s, &g)).params, 73_306, "{op}");
    }
    assert_eq!(s.architectures(), 15_625u32.into());
}

#[test]
fn darts_space_has_about_1e18_architectures() {
    let s = load_space("schemas/darts.ron", Overrides::default());
    // Per cell: node i picks 2 of its i+2 inputs and one of 7 ops for each: Π C(i+2, 2)·49.
    let per_cell: u128 = [1u128, 3, 6, 10].iter().map(|c| c * 49).product();
    assert_eq!(
        s.architectures().to_string(),
        (per_cell * per_cell).to_string()
    );
}

#[test]
fn ranges_bracket_every_published_architecture() {
    let s = load_space("schemas/darts.ron", with_size(36, 20));
    let r = s.cost_range();
    for (name, _) in PUBLISHED {
        let c = s.discrete_cost(&arch(&s, name));
        assert!(
            r.min.params <= c.params && c.params <= r.max.params,
            "{name}"
        );
        assert!(r.min.macs <= c.macs && c.macs <= r.max.macs, "{name}");
    }
    let nb = load_space("schemas/nas-bench-201.ron", Overrides::default());
    let r = nb.cost_range();
    assert_eq!(r.min.params, 73_306);
    // All nor_conv_3x3 is the largest cell.
    let g = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    assert_eq!(r.max, nb.discrete_cost(&arch(&nb, g)));
}

#[test]
fn mobilenet_chain_counts() {
    let s = load_space("schemas/mobilenet-chain.ron", Overrides::default());
    // 4 stages of 4 layers: the first of 4 blocks, the rest of 4 blocks or skip.
    assert_eq!(s.architectures(), (500u64.pow(4)).into());
    assert_eq!(s.slots.len(), 17);
    // Skipping every skippable layer gives the smallest network.
    let layers: Vec<&str> = std::iter::once("ir_k3_e1")
        .chain((0..4).flat_map(|_| ["ir_k3_e3", "skip", "skip", "skip"]))
        .collect();
    let g = Genotype {
        version: nas_pipe::spec::Spanned::unspanned(1),
        space: "mobilenet-chain".into(),
        cells: Default::default(),
        layers: nas_pipe::spec::Spanned::unspanned(
            layers
                .iter()
                .map(|l| nas_pipe::spec::Spanned::unspanned(l.to_string()))
                .collect(),
        ),
    };
    let src = Source::from_text(Path::new("g"), String::new());
    let a = g.resolve(&src, &s).unwrap();
    assert_eq!(s.discrete_cost(&a).params, s.cost_range().min.params);
}

#[test]
fn pipeline_input_shapes_reach_the_space() {
    let mut sources = Sources::default();
    let p = nas_pipe::pipeline::resolve::load(
        &mut sources,
        &root().join("pipelines/fashion-mnist.ron"),
    )
    .unwrap();
    assert_eq!(
        p.search_space.input,
        Input {
            channels: 1,
            size: 28,
            classes: 10
        }
    );
    // 28 → 14 → 7 through the two reductions.
    assert_eq!(
        p.retrain_space.network.layers.last().unwrap().input_shapes[0].h,
        7
    );
}

// ---- Genotypes ----

#[test]
fn genotype_ron_round_trips() {
    for (space_file, g) in [
        ("schemas/darts.ron", "DARTS_V1"),
        ("schemas/nas-bench-201.ron", NB201_EXAMPLE),
    ] {
        let s = load_space(space_file, Overrides::default());
        let (src, genotype) = Genotype::from_arg(g, &s).unwrap();
        let resolved = genotype.resolve(&src, &s).unwrap();
        let text = genotype.to_ron();
        let src2 = Source::from_text(Path::new("genotype.ron"), text.clone());
        let back: Genotype = src2.parse().unwrap();
        assert_eq!(back.resolve(&src2, &s).unwrap(), resolved, "{text}");
    }
}

#[test]
fn genotype_errors_point_into_the_string() {
    let s = load_space("schemas/nas-bench-201.ron", Overrides::default());
    let bad = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~3|";
    let (src, g) = Genotype::from_arg(bad, &s).unwrap();
    let e = g.resolve(&src, &s).unwrap_err().to_string();
    assert!(
        e.starts_with("--genotype:1:81: cell \"cell\", node 3: no edge from state 3"),
        "{e}"
    );
    let e = Genotype::from_arg("|nor_conv_3x3|", &s)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected `op~input`"), "{e}");
    let d = load_space("schemas/darts.ron", Overrides::default());
    let e = Genotype::from_arg(
        "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2, 3, 4, 5])",
        &d,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("has 1 pairs") && e.contains("needs 8"), "{e}");
    // TopK genotypes may not pick `none`.
    let v2 = PUBLISHED[1].1.replacen("'sep_conv_3x3', 0", "'none', 0", 1);
    let (src, g) = Genotype::from_arg(&v2, &d).unwrap();
    assert!(
        g.resolve(&src, &d)
            .unwrap_err()
            .to_string()
            .contains("\"none\" is not a candidate")
    );
}

// ---- Hierarchical spaces ----

const MOTIF_SPACE: &str = r#"SearchSpace(
    name: "motifs",
    ops: [("none", Zero), ("skip", Identity), ("conv3", ReluConvBn(kernel: 3)), ("conv1", ReluConvBn(kernel: 1))],
    cells: {
        "top": Cell(inputs: 1, nodes: 2, output: Last, candidates: ["none", "skip", "motif"]),
        "motif": Cell(inputs: 1, nodes: 1, output: Last, candidates: ["conv3", "conv1", "inner"]),
        "inner": Cell(inputs: 1, nodes: 2, output: Concat, candidates: ["conv1", "conv3"]),
    },
    network: Sequence(blocks: [ConvBn(kernel: 3, channels: 8), Cell("top"), GlobalPoolLinear]),
    derive: ArgmaxPerEdge,
)"#;

#[test]
fn motifs_nest_and_count_exactly() {
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(
        Path::new("motifs.ron"),
        MOTIF_SPACE.into(),
    ));
    let raw: SearchSpace = sources.parse(id).unwrap();
    let s = space::compile(&sources, &raw, &Overrides::default()).unwrap();
    // inner: 3 edges × 2 candidates = 8 versions. motif: 1 edge; conv3 | conv1 | inner(8) = 10.
    // top: 3 edges over {none, skip, motif}; motif's choice matters only when picked:
    // Σ_k C(3, k)·2^(3−k)·[k > 0]·10 + 2^3 = (27 − 8)·10 + 8 = 198.
    assert_eq!(s.architectures(), 198u32.into());
    // The inner concat halves the width: 8 channels → nodes of 4.
    assert!(space::show::text(&s).contains("cell \"inner\""));
    // The weight-sharing count includes every level (cell BN has no affine parameters).
    // inner, nodes 4 wide: edges 0→1 and 0→2 map 8→4, edge 1→2 maps 4→4, each conv1 + conv3.
    let conv = |k: u64, ci: u64, co: u64| k * k * ci * co;
    let inner = 2 * (conv(1, 8, 4) + conv(3, 8, 4)) + conv(1, 4, 4) + conv(3, 4, 4);
    let motif = conv(3, 8, 8) + conv(1, 8, 8) + inner;
    // stem conv + affine BN, top's 3 edges (none and skip have no weights), head.
    let expected = (conv(3, 3, 8) + 16) + 3 * motif + (8 * 10 + 10);
    assert_eq!(s.supernet_cost().params, expected);
}

#[test]
fn includes_bring_ops_and_cells_in_order() {
    let dir = tempdir("includes");
    std::fs::write(dir.join("lib.ron"), r#"Library(ops: [("none", Zero), ("skip", Identity)], cells: { "c": Cell(inputs: 1, nodes: 2, output: Last) })"#).unwrap();
    std::fs::write(
        dir.join("space.ron"),
        r#"SearchSpace(name: "inc", include: ["lib.ron"], ops: [("conv", ReluConvBn(kernel: 3))],
            network: Sequence(blocks: [ConvBn(kernel: 3, channels: 4), Cell("c"), GlobalPoolLinear]), derive: ArgmaxPerEdge)"#,
    )
    .unwrap();
    let s = {
        let mut sources = Sources::default();
        space::load(
            &mut sources,
            &dir.join("space.ron"),
            None,
            &Overrides::default(),
        )
        .unwrap()
    };
    let names: Vec<&str> = s.ops.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["none", "skip", "conv"]);
    assert_eq!(s.architectures(), 27u32.into());
}

// ---- CLI and golden files ----

#[test]
fn shipped_specs_check_clean() {
    for dir in ["schemas", "pipelines"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let out = bin().arg("check").arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // A data set this machine lacks is the one error a shipped pipeline may give.
            if stderr.contains("no such directory (expected the") && stderr.contains("= help: ") {
                assert_eq!(out.status.code(), Some(2));
                continue;
            }
            assert!(out.status.success(), "{}: {stderr}", path.display());
            assert!(String::from_utf8_lossy(&out.stdout).contains("architectures"));
        }
    }
}

/// Issue #18: `check` on a pipeline no stage of which reads images (a tabular search,
/// nothing retrained) needs no data folder and says so; add retraining and the missing
/// folder is an error naming it again.
#[test]
fn check_needs_no_data_when_no_stage_reads_images() {
    let dir = tempdir("check-unread-data");
    let text = std::fs::read_to_string(root().join("pipelines/nb201-random.ron"))
        .unwrap()
        .replace("../data/cifar-10-batches-bin", "no-such-folder")
        .replace("\"../", &format!("\"{}/", root().display()));
    let file = dir.join("tabular.ron");
    std::fs::write(&file, &text).unwrap();
    let out = run_ok(bin().arg("check").arg(&file));
    assert!(
        out.contains(&format!("{}: ok\n", file.display()))
            && out.contains(
                "data: not needed: no stage of this pipeline reads images, so its files are \
                 neither read nor checked\n"
            ),
        "{out}"
    );
    let retrained = dir.join("retrained.ron");
    let with_retrain = text.replacen(
        "    search: Trials(",
        "    retrain: Retrain(channels: 2, layers: 3, epochs: 1, batch_size: 16, optimizer: Sgd(lr: 0.05, weight_decay: 3e-4, grad_clip: 5.0)),\n    search: Trials(",
        1,
    );
    std::fs::write(&retrained, with_retrain).unwrap();
    let e = fails(bin().arg("check").arg(&retrained));
    assert!(e.contains("no-such-folder"), "{e}");
}

/// The CIFAR-10 class names, as `class_names` lists them.
const CIFAR_CLASSES: &str =
    r#"["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]"#;

/// `pipelines/nb201-random.ron` in `dir` with `data` as its data section and retraining
/// when `retrain`; returns its path.
fn tabular_pipeline(dir: &Path, name: &str, data: &str, retrain: bool) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("pipelines/nb201-random.ron"))
        .unwrap()
        .replace(r#"Cifar10(dir: "../data/cifar-10-batches-bin")"#, data)
        .replace("\"../", &format!("\"{}/", root().display()));
    if retrain {
        text = text.replacen(
            "    search: Trials(",
            "    retrain: Retrain(channels: 2, layers: 3, epochs: 1, batch_size: 16, optimizer: Sgd(lr: 0.05, weight_decay: 3e-4, grad_clip: 5.0)),\n    search: Trials(",
            1,
        );
    }
    let file = dir.join(format!("{name}.ron"));
    std::fs::write(&file, text).unwrap();
    file
}

/// Issue #18: an image folder that declares its class names needs no files when no stage
/// reads images: `check` passes, naming the classes in the declared order, and the tabular
/// search runs; without the names the folder is listed for them and its absence is an
/// error, and so it is once a stage reads images, with a note on where the names are.
#[test]
fn declared_class_names_need_no_data_when_no_stage_reads_images() {
    let dir = tempdir("check-declared-classes");
    let data = format!(
        r#"ImageFolder(dir: "no-such-folder", image: (size: 32, class_names: {CIFAR_CLASSES}))"#
    );
    let file = tabular_pipeline(&dir, "declared", &data, false);
    let out = run_ok(bin().arg("check").arg(&file));
    assert!(
        out.contains("input 3×32×32, 10 classes (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck)\n")
            && out.contains("data: not needed: no stage of this pipeline reads images"),
        "{out}"
    );
    run_ok(
        bin()
            .arg("run")
            .arg(&file)
            .arg("--out")
            .arg(dir.join("out")),
    );
    assert!(dir.join("out/nb201-random/search/trials.json").is_file());

    let listed = tabular_pipeline(
        &dir,
        "listed",
        r#"ImageFolder(dir: "no-such-folder", image: (size: 32))"#,
        false,
    );
    let e = fails(bin().arg("check").arg(&listed));
    assert!(e.contains("no-such-folder: no such directory"), "{e}");

    let retrained = tabular_pipeline(&dir, "retrained", &data, true);
    let e = fails(bin().arg("check").arg(&retrained));
    assert!(
        e.contains("no-such-folder: no such directory")
            && e.contains(&format!(
                "= note: the data's class names are declared at {}:11:",
                retrained.display()
            )),
        "{e}"
    );
}

/// Issue #18: when a stage reads the images, an image folder whose class folders are not
/// the declared names is an error (exit 2) naming the folder, the way out and where the
/// names are declared.
#[test]
fn class_folders_must_match_the_declared_names() {
    let dir = tempdir("check-declared-mismatch");
    for f in ["imgs/train/cat/0.png", "imgs/train/dog/0.png"] {
        let path = dir.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"not decoded by check").unwrap();
    }
    let data = |names: &str| {
        format!(r#"ImageFolder(dir: "imgs", image: (size: 32, class_names: {names}))"#)
    };
    let file = tabular_pipeline(&dir, "extra", &data(r#"["cat", "cow"]"#), true);
    let e = fails(bin().arg("check").arg(&file));
    let train = dir.join("imgs/train");
    assert!(
        e.contains(&format!(
            "{}: class folder \"dog\" is not one of the declared `class_names` (cat, cow)",
            train.join("dog").display()
        )) && e.contains(&format!("move the folder out of {}", train.display()))
            && e.contains(&format!("declared at {}:11:", file.display())),
        "{e}"
    );
    let file = tabular_pipeline(&dir, "missing", &data(r#"["cat", "dog", "cow"]"#), true);
    let e = fails(bin().arg("check").arg(&file));
    assert!(
        e.contains(&format!(
            "{}: no folder for class \"cow\" of the declared `class_names`",
            train.display()
        )),
        "{e}"
    );
    let file = tabular_pipeline(&dir, "same", &data(r#"["dog", "cat"]"#), true);
    let out = run_ok(bin().arg("check").arg(&file));
    assert!(out.contains("2 classes (dog, cat)"), "{out}");
}

#[test]
fn malformed_specs_give_exact_errors() {
    let dir = root().join("tests/golden/errors");
    let mut n = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    for path in files {
        let rel = path.strip_prefix(root()).unwrap();
        let out = bin().arg("check").arg(rel).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            rel.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{}", rel.display());
        golden(
            &path.with_extension("stderr"),
            &String::from_utf8_lossy(&out.stderr),
        );
        n += 1;
    }
    assert!(n >= 15, "only {n} malformed specs");
}

#[test]
fn show_output_is_stable() {
    let cases: &[(&str, &[&str])] = &[
        ("darts.txt", &["show", "schemas/darts.ron"]),
        (
            "darts-v2.txt",
            &["show", "schemas/darts.ron", "--genotype", "DARTS_V2"],
        ),
        (
            "darts-v2.dot",
            &[
                "show",
                "schemas/darts.ron",
                "--dot",
                "--genotype",
                "DARTS_V2",
            ],
        ),
        ("nas-bench-201.txt", &["show", "schemas/nas-bench-201.ron"]),
        (
            "nas-bench-201.dot",
            &["show", "schemas/nas-bench-201.ron", "--dot"],
        ),
        (
            "nas-bench-201-example.txt",
            &[
                "show",
                "schemas/nas-bench-201.ron",
                "--genotype",
                NB201_EXAMPLE,
            ],
        ),
        (
            "mobilenet-chain.txt",
            &["show", "schemas/mobilenet-chain.ron"],
        ),
        ("check-darts.txt", &["check", "schemas/darts.ron"]),
        ("check-smoke.txt", &["check", "pipelines/smoke.ron"]),
    ];
    for (file, args) in cases {
        let out = bin().args(*args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        golden(
            &root().join("tests/golden/show").join(file),
            &String::from_utf8_lossy(&out.stdout),
        );
    }
}

#[test]
fn help_documents_every_option() {
    let out = bin().args(["show", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--dot", "--genotype", "DARTS_V2", "NAS-Bench-201"] {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
    let out = bin().args(["check", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("architectures"));
}

#[test]
fn bad_genotype_argument_is_a_clean_error() {
    let out = bin()
        .args(["show", "schemas/darts.ron", "--genotype", "DARTS_V9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.starts_with("nas-pipe: --genotype \"DARTS_V9\": no such file"),
        "{e}"
    );
}

// ---- No input makes it panic ----

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "0",
    "-1",
    "1",
    "2",
    "3",
    "4294967296",
    "1e999",
    "NaN",
    "-0.5",
    "Some(",
    "None",
    "//",
    "/*",
    "Dense",
    "Explicit([(0, 9)])",
    "Explicit([(1, 1)])",
    "Explicit([])",
    "Concat",
    "Last",
    "Cell(\"cell\")",
    "Repeat(0, BnRelu)",
    "Stage(channels: 3, layers: 2, stride: 2, candidates: [])",
    "Index(99)",
    "true",
    "\"normal\"",
    "\"reduce\"",
    "\"none\"",
    "Zero",
    "Identity",
    "MaxPool(kernel: 2)",
    "r#\"x\"#",
    "'c'",
    "\u{2028}",
    "é",
    "#![enable(unwrap_newtypes)]",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len().max(1));
        match rng.below(6) {
            0 => {
                bytes.remove(at.min(bytes.len().saturating_sub(1)));
            }
            1 => bytes.insert(at, b" (),:[]{}\"0123456789-.xe/*#\n"[rng.below(28)]),
            2 => bytes[at] = rng.next() as u8,
            3 | 4 => {
                let tok = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, tok.iter().copied());
            }
            _ => {
                // Replace a number or word at `at` with a token.
                let end = (at..bytes.len())
                    .find(|&i| !bytes[i].is_ascii_alphanumeric())
                    .unwrap_or(bytes.len());
                let tok = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..end, tok.iter().copied());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn check_text(path: &Path, text: String) -> Result<String, String> {
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(path, text));
    let r = if path.starts_with(root().join("pipelines")) {
        sources
            .parse(id)
            .and_then(|spec| nas_pipe::pipeline::resolve::resolve(&mut sources, id, path, spec))
            .map(|p| space::show::summary(&p.retrain_space))
    } else {
        sources
            .parse::<SearchSpace>(id)
            .and_then(|raw| space::expand_includes(&mut sources, path, raw))
            .and_then(|raw| space::compile(&sources, &raw, &Overrides::default()))
            .map(|s| {
                space::show::summary(&s) + &space::show::text(&s) + &space::show::dot(&s, None)
            })
    };
    r.map_err(|e| e.to_string())
}

#[test]
fn random_mutations_never_panic() {
    let files = [
        "schemas/darts.ron",
        "schemas/nas-bench-201.ron",
        "schemas/mobilenet-chain.ron",
        "pipelines/cifar.ron",
        "pipelines/fashion-mnist.ron",
        "pipelines/fashion-mnist-quick.ron",
        "pipelines/smoke.ron",
    ];
    let cases: usize = std::env::var("NAS_PIPE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (mut ok, mut err) = (0, 0);
    for (fi, file) in files.iter().enumerate() {
        let path = root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        for case in 0..cases {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((fi as u64) << 32 | case as u64));
            let mutated = mutate(&mut rng, &text);
            let result = std::panic::catch_unwind(|| check_text(&path, mutated.clone()));
            match result {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => {
                    assert!(
                        e.contains(':'),
                        "{file} case {case}: error without a position: {e}"
                    );
                    err += 1;
                }
                Err(_) => panic!("{file} case {case} panicked on:\n{mutated}"),
            }
        }
    }
    // Both outcomes must occur, or the mutations are not exercising the checks.
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

/// The weight-sharing count (every candidate) and the discrete network's count are computed
/// by separate code; with one candidate per edge and affine BN they must agree (but for the
/// activations of the supernet's mixing, one map per edge).
#[test]
fn single_candidate_supernet_equals_its_only_architecture() {
    let text = std::fs::read_to_string(root().join("schemas/nas-bench-201.ron"))
        .unwrap()
        .replace(
            "output: Last)",
            "output: Last, candidates: [\"nor_conv_3x3\"])",
        )
        .replace(
            "supernet: (affine: false, pool_bn: false)",
            "supernet: (affine: true, pool_bn: false)",
        );
    let mut sources = Sources::default();
    let path = root().join("schemas/nas-bench-201.ron");
    let id = sources.add(Source::from_text(&path, text));
    let raw: SearchSpace = sources.parse(id).unwrap();
    let s = space::compile(&sources, &raw, &Overrides::default()).unwrap();
    assert_eq!(s.architectures(), 1u32.into());
    let g = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|";
    let a = arch(&s, g);
    let (supernet, discrete) = (s.supernet_cost(), s.discrete_cost(&a));
    assert_eq!(
        (supernet.params, supernet.macs),
        (discrete.params, discrete.macs)
    );
    assert!(supernet.acts > discrete.acts);
    assert_eq!(s.cost_range().min, discrete);
}

#[test]
fn discrete_network_is_built_from_the_genotype() {
    use nas_pipe::space::discrete::{NetKind, NetOp};
    let s = load_space("schemas/darts.ron", with_size(36, 20));
    let net = s.build(&arch(&s, "DARTS_V2"));
    assert_eq!(net.layers.len(), 22);
    let mut cells = 0;
    for l in &net.layers {
        if let NetKind::Cell(c) = &l.kind {
            cells += 1;
            assert_eq!(c.graph.edge_count(), 8, "two chosen edges per node");
            for e in c.graph.edge_weights() {
                let NetOp::Op(op) = &e.op else {
                    panic!("DARTS has no motifs")
                };
                assert_ne!(*op, nas_pipe::ops::Op::Zero);
                assert_eq!(e.output.c, c.width);
            }
        }
    }
    assert_eq!(cells, 20);
    assert_eq!(net.cost().params, 3_349_342);
    assert_eq!(net.graph.node_count(), net.layers.len());
}

#[test]
fn resolved_pipeline_spec_reads_back_the_same() {
    for file in [
        "pipelines/cifar.ron",
        "pipelines/fashion-mnist.ron",
        "pipelines/fashion-mnist-quick.ron",
        "pipelines/smoke.ron",
    ] {
        let mut sources = Sources::default();
        let p = nas_pipe::pipeline::resolve::load(&mut sources, &root().join(file)).unwrap();
        let text = p.spec.to_ron();
        let id = sources.add(Source::from_text(&root().join(file), text.clone()));
        let again: pipeline::Pipeline = sources.parse(id).unwrap();
        assert_eq!(again.to_ron(), text, "{file}");
        let r = nas_pipe::pipeline::resolve::resolve(&mut sources, id, &root().join(file), again)
            .unwrap();
        assert_eq!(
            r.search_space.supernet_cost(),
            p.search_space.supernet_cost()
        );
    }
}

/// Issue #22: shell completions and a man page come from the binary, and clap's own errors
/// read like nas-pipe's (`nas-pipe: …`, exit 2).
#[test]
fn completions_man_page_and_usage_errors() {
    for (shell, marker) in [
        ("bash", "complete -F _nas__pipe"),
        ("zsh", "#compdef nas-pipe"),
        ("fish", "complete -c nas-pipe"),
    ] {
        let out = run_ok(bin().args(["completions", shell]));
        assert!(
            out.contains(marker),
            "{shell}: {}",
            &out[..out.len().min(200)]
        );
        assert!(out.contains("device-check"), "{shell}");
    }
    let man = run_ok(bin().arg("man"));
    assert!(
        man.contains(".TH nas-pipe 1") && man.contains("device\\-check"),
        "{man}"
    );
    let dir = tempdir("man-pages");
    run_ok(bin().args(["man", "--out"]).arg(&dir));
    assert!(dir.join("nas-pipe.1").is_file() && dir.join("nas-pipe-run.1").is_file());
    let e = fails(bin().args(["check", "--bogus"]));
    assert!(
        e.starts_with("nas-pipe: unexpected argument '--bogus'"),
        "{e}"
    );
    let e = fails(bin().arg("run"));
    assert!(
        e.starts_with("nas-pipe: the following required arguments"),
        "{e}"
    );
}
