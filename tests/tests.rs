//! The integration tests: one binary. Golden files live under `tests/golden/`; run with
//! `NAS_PIPE_BLESS=1` to rewrite them after a deliberate change, then review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_pipe::space::genotype::{Genotype, PUBLISHED};
use nas_pipe::space::{self, Overrides, Space};
use nas_pipe::spec::pipeline;
use nas_pipe::spec::space::{Input, SearchSpace};
use nas_pipe::spec::{Source, Sources, Span};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nas-pipe"));
    c.current_dir(root());
    c
}

fn bless() -> bool {
    std::env::var_os("NAS_PIPE_BLESS").is_some()
}

/// Compares `actual` with the golden file (or rewrites it when blessing).
fn golden(path: &Path, actual: &str) {
    if bless() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; run with NAS_PIPE_BLESS=1",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn load_space(path: &str, ov: Overrides) -> Space {
    let mut sources = Sources::default();
    space::load(&mut sources, &root().join(path), None, &ov).unwrap()
}

fn with_size(channels: u32, layers: u32) -> Overrides {
    Overrides {
        input: None,
        channels: Some((channels, Span::default())),
        layers: Some((layers, Span::default())),
    }
}

fn arch(space: &Space, g: &str) -> nas_pipe::space::genotype::Architecture {
    let (src, genotype) = Genotype::from_arg(g, space).unwrap();
    genotype.resolve(&src, space).unwrap()
}

const NB201_EXAMPLE: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";

// ---- Reference numbers (../shared/reference) ----

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
    let p = pipeline::load(&mut sources, &root().join("pipelines/fashion-mnist.ron")).unwrap();
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

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nas-pipe-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- CLI and golden files ----

#[test]
fn shipped_specs_check_clean() {
    for dir in ["schemas", "pipelines"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let out = bin().arg("check").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("architectures"));
        }
    }
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
            "--json",
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

// ---- No input makes it panic ----

/// A small deterministic generator (xorshift), so failures reproduce from the case number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

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
            .and_then(|spec| pipeline::resolve(&mut sources, id, path, spec))
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
/// by separate code; with one candidate per edge and affine BN they must agree.
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
    assert_eq!(s.supernet_cost(), s.discrete_cost(&a));
    assert_eq!(s.cost_range().min, s.discrete_cost(&a));
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
        "pipelines/smoke.ron",
    ] {
        let mut sources = Sources::default();
        let p = pipeline::load(&mut sources, &root().join(file)).unwrap();
        let text = p.spec.to_ron();
        let id = sources.add(Source::from_text(&root().join(file), text.clone()));
        let again: pipeline::Pipeline = sources.parse(id).unwrap();
        assert_eq!(again.to_ron(), text, "{file}");
        let r = pipeline::resolve(&mut sources, id, &root().join(file), again).unwrap();
        assert_eq!(
            r.search_space.supernet_cost(),
            p.search_space.supernet_cost()
        );
    }
}

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

// ---- The final network (retraining) ----

fn chain_genotype(s: &Space, layers: &[&str]) -> nas_pipe::space::genotype::Architecture {
    let g = Genotype {
        version: nas_pipe::spec::Spanned::unspanned(1),
        space: s.name.clone(),
        cells: Default::default(),
        layers: nas_pipe::spec::Spanned::unspanned(
            layers
                .iter()
                .map(|l| nas_pipe::spec::Spanned::unspanned(l.to_string()))
                .collect(),
        ),
    };
    let src = Source::from_text(Path::new("g"), String::new());
    g.resolve(&src, s).unwrap()
}

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

/// A small retraining pipeline on synthetic data (DARTS space, C = 2, 3 cells).
fn train_pipeline(dir: &Path, name: &str, size: u32, retrain_extra: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 5,
    device: Cpu,
    data: Synthetic(channels: 3, size: {size}, classes: 4, train: 40, test: 24),
    space: "{}",
    retrain: Retrain(
        channels: 2, layers: 3, epochs: 3, batch_size: 16,
        optimizer: Sgd(lr: 0.1, lr_min: 0.0, weight_decay: 3e-4, grad_clip: 5.0, warmup_epochs: 1),
        augment: (crop_padding: 1, flip: true, cutout: 2),
        {retrain_extra}
    ),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join(format!("{name}.ron"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `c`, which must fail as bad input (exit code 2); returns its stderr.
fn fails(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    // The model card, space and genotype beside the weights rebuild the same network.
    let t = nas_pipe::stages::retrain::load_model(&a).unwrap();
    assert_eq!(t.net.cost().params, t.card.params);
    let m = nas_pipe::nets::model::Model::new(&t.net, &candle_core::Device::Cpu, 0, false).unwrap();
    nas_pipe::stages::retrain::load_weights(&m, &a.join("best.safetensors")).unwrap();

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
    }
}

// ---- ONNX Runtime and the profile stage ----

/// The ONNX Runtime library the search finds (ORT_DYLIB_PATH, .venv/, python3, system), or
/// `None` with a note on stderr that the calling test is skipped. A library named by
/// ORT_DYLIB_PATH must load.
fn ort_runtime(test: &str) -> Option<&'static nas_pipe::runtime::Runtime> {
    match nas_pipe::runtime::load(None) {
        Ok(rt) => Some(rt),
        Err(e) if std::env::var_os("ORT_DYLIB_PATH").is_some() => {
            panic!("ORT_DYLIB_PATH is set but ONNX Runtime does not load: {e}")
        }
        Err(e) => {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no ONNX Runtime library; bash scripts/test.sh installs one.\n{e}"
            );
            None
        }
    }
}

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
    use nas_pipe::stages::profile::{self, Known, Plan};
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
    use nas_pipe::stages::profile::{self, Known, Plan};
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
    let mut files = vec![root().join("src/profile.rs")];
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
    let card = nas_pipe::stages::retrain::load_model(&out.join("v/retrain"))
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

/// Each ```` ```python ```` and ```` ```rust ```` block of the README's serving section, as
/// (language, lines).
fn serving_snippets() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("## Serving the exported model")
        .expect("README has a serving section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
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

/// The README's serving snippets are excerpts of `examples/serve.py` and `examples/serve.rs`.
#[test]
fn serving_readme_snippets_are_excerpts_of_the_examples() {
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
            "this README snippet is not an excerpt of {file}:\n{}",
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
    let trained = nas_pipe::stages::retrain::load_model(&rdir).unwrap();
    let net = nas_pipe::nets::model::Model::new(&trained.net, &Device::Cpu, 0, false).unwrap();
    nas_pipe::stages::retrain::load_weights(&net, &rdir.join("last.safetensors")).unwrap();
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

// ---- Report ----

use nas_pipe::run::Stage;
use nas_pipe::run::lock::{Entry, KeyParts, Lock, Status};
use nas_pipe::stages::report;

/// A smoke-sized pipeline for the report: two search epochs (so that the op-weight history
/// has columns), two retraining epochs, export, validation and profile.
fn report_pipeline(dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        r#"Pipeline(
    name: "{name}",
    seed: 3,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 64, test: 32),
    space: "{}",
    search: Darts(
        epochs: 2, batch_size: 16, channels: 4, layers: 3,
        weights: Sgd(lr: 0.025, lr_min: 0.001, weight_decay: 3e-4, grad_clip: 5.0),
        arch: Adam(lr: 3e-2, betas: (0.5, 0.999), weight_decay: 1e-3),
    ),
    retrain: Retrain(
        channels: 4, layers: 3, epochs: 2, batch_size: 16,
        optimizer: Sgd(lr: 0.025, weight_decay: 3e-4, grad_clip: 5.0),
    ),
    export: Onnx(),
    validate: Validate(samples: 32),
    profile: Profile(batch_sizes: [1, 4], threads: [1], warmup: 1, runs: 5),
)"#,
        root().join("schemas/darts.ron").display()
    );
    let path = dir.join(format!("{name}.ron"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes what the pipeline runner would: `pipeline.ron` (the resolved spec) and a lock
/// with an entry per stage that has outputs, at fixed times, and the report's own entry
/// (running), which the report must ignore.
fn write_runner_files(pipeline_file: &Path, run: &Path) {
    let p = pipeline::load(&mut Sources::default(), pipeline_file).unwrap();
    std::fs::write(run.join("pipeline.ron"), p.spec.to_ron()).unwrap();
    let mut lock = Lock::new(&p.spec.name.value);
    let stages = [
        (Stage::Search, "search/state.json", 61.5, "cpu"),
        (Stage::Derive, "genotype.ron", 0.02, "cpu"),
        (Stage::Retrain, "retrain/metrics.json", 3725.0, "cpu"),
        (Stage::Export, "model.onnx", 0.4, "cpu"),
        (
            Stage::Validate,
            "validation.json",
            2.5,
            "onnxruntime 1.32.0 cpu",
        ),
        (
            Stage::Profile,
            "profile.json",
            4.0,
            "onnxruntime 1.32.0 cpu",
        ),
        (Stage::Report, "report.html", 0.0, "cpu"),
    ];
    for (k, (stage, output, seconds, device)) in stages.into_iter().enumerate() {
        if stage != Stage::Report && !run.join(output).exists() {
            continue;
        }
        lock.set(Entry {
            stage,
            key: format!("key-{k}"),
            parts: KeyParts {
                sections: [("spec".to_string(), "h".to_string())].into(),
                version: "0.1.0".into(),
                device: device.into(),
                upstream: Default::default(),
            },
            status: if stage == Stage::Report {
                Status::Running
            } else {
                Status::Done
            },
            started: format!("2025-06-01T10:{:02}:00Z", 10 * k),
            finished: (stage != Stage::Report).then(|| format!("2025-06-01T10:{:02}:30Z", 10 * k)),
            seconds,
            inputs: Default::default(),
            outputs: Default::default(),
            note: None,
        });
    }
    lock.write(run).unwrap();
}

/// `validation.json` and `profile.json` from their types, for machines without ONNX
/// Runtime.
fn write_ort_artifacts(run: &Path) {
    let v = nas_pipe::stages::validate::Validation {
        model: run.join("model.onnx").display().to_string(),
        weights: run.join("retrain/last.safetensors").display().to_string(),
        samples: 32,
        max_abs_diff: 3.0e-8,
        mean_abs_diff: 8.0e-9,
        top1_agreement: 1.0,
        ort_accuracy: 0.25,
        candle_accuracy: 0.25,
        max_abs_diff_allowed: 1e-4,
        min_top1_agreement: 0.999,
        passed: true,
        ort_version: "1.32.0".into(),
    };
    std::fs::write(
        run.join("validation.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    use nas_pipe::stages::profile::{Latency, Machine, Model, Plan, Report, Row};
    let row = |batch: usize, ms: f64| Row {
        batch,
        threads: 1,
        latency_ms: Latency::of(&[ms, ms * 1.1, ms * 0.9, ms * 1.5, ms]),
        images_per_s: batch as f64 * 1e3 / ms,
    };
    let r = Report {
        version: nas_pipe::stages::profile::SCHEMA_VERSION,
        model: Model {
            path: run.join("model.onnx"),
            file_bytes: 50_000,
            params: Some(6_876),
            params_from: Some("architecture".into()),
            macs: Some(128_896),
            input_name: "input".into(),
            input_shape: vec![None, Some(3), Some(8), Some(8)],
        },
        ort_version: "1.32.0".into(),
        execution_provider: "CPUExecutionProvider".into(),
        machine: Machine {
            cpu: "Test CPU".into(),
            cores: 2,
        },
        plan: Plan {
            batch_sizes: vec![1, 4],
            threads: vec![1],
            warmup: 1,
            runs: 5,
        },
        rows: vec![row(1, 0.1), row(4, 0.3)],
        notes: Vec::new(),
    };
    std::fs::write(
        run.join("profile.json"),
        serde_json::to_vec_pretty(&r).unwrap(),
    )
    .unwrap();
}

/// A run folder made by the real stages (search, train, export; validate and profile when
/// ONNX Runtime loads, else their files from the typed structs) plus the runner's files.
/// Built once per test binary; tests that change it work on a copy.
fn report_fixture() -> &'static Path {
    static RUN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempdir("report-fixture");
        let p = report_pipeline(&dir, "rep");
        let out = dir.join("out");
        for stage in ["search", "train", "export"] {
            run_ok(bin().arg(stage).arg(&p).arg("--out").arg(&out));
        }
        let run = out.join("rep");
        if ort_runtime("report fixture: real validate and profile stages").is_some() {
            for stage in ["validate", "profile"] {
                run_ok(bin().arg(stage).arg(&p).arg("--out").arg(&out));
            }
        } else {
            write_ort_artifacts(&run);
        }
        write_runner_files(&p, &run);
        run
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A copy of the fixture run folder to change.
fn report_copy(name: &str) -> PathBuf {
    let run = tempdir(name).join("run");
    copy_dir(report_fixture(), &run);
    for f in [report::HTML, report::MARKDOWN, report::SUMMARY] {
        let _ = std::fs::remove_file(run.join(f));
    }
    run
}

fn section<'h>(html: &'h str, id: &str) -> &'h str {
    let start = html
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = start + html[start..].find("</section>").unwrap();
    &html[start..end]
}

/// A text element as plotters writes it into an SVG.
fn svg_text(s: &str) -> String {
    format!(">\n{s}\n</text>")
}

const SECTION_IDS: [&str; 10] = [
    "run",
    "search",
    "op-weights",
    "architecture",
    "retrain",
    "evaluation",
    "validation",
    "latency",
    "cost",
    "spec",
];

/// What is wrong with the page as a self-contained HTML5 document: a network reference, a
/// script, unbalanced or misnested tags, a duplicate id, a reference to a missing id.
fn html_problems(html: &str) -> Vec<String> {
    let mut p = Vec::new();
    if !html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">") {
        p.push("no HTML5 doctype first".to_string());
    }
    let lower = html.to_lowercase();
    if lower.contains("<script") {
        p.push("a <script>".into());
    }
    if lower.contains(" src=") || lower.contains("@import") || lower.contains("@font-face") {
        p.push("an external resource (src=, @import or @font-face)".into());
    }
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for scheme in ["http://", "https://", "//fonts."] {
        if let Some(i) = without_ns.find(scheme) {
            p.push(format!(
                "a network reference: {}",
                &without_ns[i..(i + 60).min(without_ns.len())]
            ));
        }
    }
    if html.matches("<svg").count() != html.matches("</svg>").count() {
        p.push("unbalanced <svg>".into());
    }
    let attr = |name: &str| -> Vec<String> {
        html.split(&format!(" {name}=\""))
            .skip(1)
            .map(|s| s[..s.find('"').unwrap_or(0)].to_string())
            .collect()
    };
    let ids = attr("id");
    let mut seen = std::collections::HashSet::new();
    for id in &ids {
        if !seen.insert(id.clone()) {
            p.push(format!("duplicate id {id:?}"));
        }
    }
    for href in attr("href") {
        match href.strip_prefix('#') {
            Some(target) if seen.contains(target) => {}
            Some(target) => p.push(format!("href to a missing id #{target}")),
            None if href == "data:," || href == "report.html" => {}
            None => p.push(format!("href to {href}")),
        }
    }
    for r in html.split("url(#").skip(1) {
        let target = &r[..r.find(')').unwrap_or(0)];
        if !seen.contains(target) {
            p.push(format!("url(#{target}) to a missing id"));
        }
    }
    // Tags nest: every element opened is closed, in order (void elements and `/>` aside).
    const VOID: [&str; 8] = ["meta", "link", "br", "hr", "img", "input", "col", "wbr"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        rest = &rest[end.min(rest.len())..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        if let Some(closing) = tag.strip_prefix('/') {
            let _ = closing;
            match stack.pop() {
                Some(open) if open == name => {}
                other => {
                    p.push(format!("</{name}> closes {other:?}"));
                    break;
                }
            }
        } else if !tag.ends_with('/') && !VOID.contains(&name.as_str()) {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        p.push(format!("unclosed: {stack:?}"));
    }
    p
}

#[test]
fn report_shows_every_section_of_a_full_run() {
    let run = report_fixture();
    let r = report::render(run).unwrap();
    let html = &r.html;
    assert!(html_problems(html).is_empty(), "{:?}", html_problems(html));
    for id in SECTION_IDS {
        let s = section(html, id);
        assert!(!s.contains("Not in this run"), "section {id}: {s}");
        assert!(
            html.contains(&format!("<a href=\"#{id}\">")),
            "toc lacks {id}"
        );
    }
    // Headline numbers.
    let e: nas_pipe::stages::retrain::Evaluation =
        serde_json::from_slice(&std::fs::read(run.join("retrain/evaluation.json")).unwrap())
            .unwrap();
    let header = &html[..html.find("<nav").unwrap()];
    assert!(
        header.contains(&format!("{:.2}%", 100.0 * e.accuracy)),
        "{header}"
    );
    assert!(header.contains("PASSED") && header.contains("card pass"));
    assert!(header.contains("Latency p50, batch 1") && header.contains(" ms<"));
    // Run facts: versions, device, seed, CPU and every stage's duration; not the report's
    // own entry.
    let facts = section(html, "run");
    for needle in [
        "nas-pipe version",
        "<td>0.1.0</td>",
        "<th>seed</th><td>3</td>",
        "<th>device (training)</th><td>cpu</td>",
        "ONNX Runtime",
        "<th>cores</th>",
        "1h 2m 5s",
        "1m 2s",
        "2025-06-01 10:00:00 UTC",
    ] {
        assert!(
            facts.contains(needle),
            "run facts lack {needle:?}:\n{facts}"
        );
    }
    assert!(!facts.contains("<td>report</td>"), "{facts}");
    // Search: two charts (loss, accuracy) with both curves; a row per epoch.
    let search = section(html, "search");
    assert_eq!(search.matches("<svg").count(), 2);
    assert!(search.contains("Search: loss") && search.contains("validation"));
    // One heatmap per edge of each cell type (14 each), edges named, ops named, a colour
    // bar per cell type, the kept ops outlined.
    let ops = section(html, "op-weights");
    assert_eq!(ops.matches("<figure>").count(), 2 * 14 + 2, "{ops}");
    assert!(ops.contains("state 0 → node 2") && ops.contains("state 4 → node 5"));
    assert!(ops.contains("sep_conv_3x3") && ops.contains("softmax weight"));
    assert!(ops.contains("stroke=\"#D62728\""), "no kept op outlined");
    // The derived cells drawn as graphs with their ops, and the genotype.
    let arch = section(html, "architecture");
    assert_eq!(arch.matches("<svg class=\"graph\"").count(), 2, "{arch}");
    let genotype = std::fs::read_to_string(run.join("genotype.ron")).unwrap();
    assert!(arch.contains(&genotype.trim_end().replace('"', "&quot;")));
    let first_op = genotype.split('"').nth(5).unwrap();
    assert!(
        arch.contains(&format!("dy=\"1.0em\">{first_op}</tspan>")),
        "{first_op}"
    );
    // Retraining: loss, accuracy and learning-rate charts; the epoch table.
    let retrain = section(html, "retrain");
    assert_eq!(retrain.matches("<svg").count(), 3);
    assert!(retrain.contains("learning rate") && retrain.contains("lr first → last"));
    // The confusion matrix with counts and class names, the per-class table.
    let eval = section(html, "evaluation");
    assert!(eval.contains("Confusion matrix") && eval.contains("true class"));
    let count = e.confusion[1][1].to_string();
    assert!(eval.contains(&svg_text(&count)), "{eval}");
    assert_eq!(eval.matches("<tr><td>").count(), e.classes.len());
    // Validation numbers, latency table and charts, counts, the spec.
    let v = section(html, "validation");
    assert!(v.contains("top-1 agreement") && v.contains("≤ 1.00e-4"));
    let lat = section(html, "latency");
    assert_eq!(lat.matches("<svg").count(), 2);
    assert!(lat.contains("p99 ms") && lat.contains("Throughput"));
    let card = nas_pipe::stages::retrain::load_model(&run.join("retrain"))
        .unwrap()
        .card;
    let cost = section(html, "cost");
    assert!(cost.contains(&nas_pipe::space::show::thousands(card.params)));
    assert!(cost.contains(&nas_pipe::space::show::thousands(card.macs)));
    let spec = section(html, "spec");
    assert!(spec.contains("<details>") && spec.contains("Pipeline("));
    assert!(spec.contains("name: &quot;rep&quot;"));

    // The Markdown: the same facts as tables, no charts, a pointer to the HTML.
    let md = &r.md;
    assert!(!md.contains("<svg"));
    assert!(md.contains("[report.html](report.html)"));
    for needle in [
        "| headline | value |",
        &format!("{:.2}%", 100.0 * e.accuracy),
        "**passed**",
        "| stage | status | started | duration | device |",
        "| epoch | lr | train loss | train acc | val loss | val acc | time | images/s |",
        "| epoch | lr first → last |",
        "| class | images | right | accuracy |",
        "| true \\ predicted |",
        "| measure | value | required | met |",
        "| batch | threads | mean ms | p50 ms |",
        "| source | parameters | MACs per image | notes |",
        "```ron\nGenotype(",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    assert!(!md.contains("Not in this run"), "{md}");
}

#[test]
fn report_summary_copies_the_artifacts_numbers() {
    let run = report_copy("report-summary");
    let w = report::write(&run).unwrap();
    assert_eq!(w.html, run.join("report.html"));
    // summary.json is the summary serialized; it reads back (numbers to the last digit
    // serde_json's reader keeps, so the comparisons below use the rendered one).
    let s = report::render(&run).unwrap().summary;
    let file = std::fs::read_to_string(&w.summary).unwrap();
    assert_eq!(file, serde_json::to_string_pretty(&s).unwrap() + "\n");
    let back: report::Summary = serde_json::from_str(&file).unwrap();
    assert_eq!(
        (back.version, &back.stages),
        (report::SUMMARY_VERSION, &s.stages)
    );
    assert_eq!(s.version, report::SUMMARY_VERSION);
    assert_eq!((s.pipeline.as_str(), s.seed), ("rep", Some(3)));
    assert_eq!(s.device.as_deref(), Some("cpu"));
    let read = |f: &str| std::fs::read(run.join(f)).unwrap();
    let e: nas_pipe::stages::retrain::Evaluation =
        serde_json::from_slice(&read("retrain/evaluation.json")).unwrap();
    assert_eq!(s.headline.test_accuracy, Some(e.accuracy));
    let es = s.evaluation.as_ref().unwrap();
    assert_eq!(
        (es.accuracy, es.loss, es.images),
        (e.accuracy, e.loss, e.images)
    );
    for (k, c) in es.per_class.iter().enumerate() {
        assert_eq!(c.class, e.classes[k]);
        assert_eq!(c.accuracy, e.per_class_accuracy[k]);
        assert_eq!(c.images, e.confusion[k].iter().sum::<u64>());
    }
    let v: nas_pipe::stages::validate::Validation =
        serde_json::from_slice(&read("validation.json")).unwrap();
    assert_eq!(s.validation.as_ref(), Some(&v));
    assert_eq!(s.headline.validation_passed, Some(v.passed));
    let p: nas_pipe::stages::profile::Report =
        serde_json::from_slice(&read("profile.json")).unwrap();
    let lat = s.latency.as_ref().unwrap();
    assert_eq!(lat.rows, p.rows);
    assert_eq!(lat.ort_version, p.ort_version);
    let b1 = p.rows.iter().find(|r| r.batch == 1).unwrap();
    assert_eq!(s.headline.latency_p50_ms_batch1, Some(b1.latency_ms.p50));
    assert_eq!(s.machine.as_ref(), Some(&p.machine));
    let card = nas_pipe::stages::retrain::load_model(&run.join("retrain"))
        .unwrap()
        .card;
    assert_eq!(
        (s.headline.params, s.headline.macs),
        (Some(card.params), Some(card.macs))
    );
    let m = s.model.as_ref().unwrap();
    assert_eq!(
        (m.params, m.macs, m.classes.len()),
        (card.params, card.macs, 4)
    );
    let search: nas_pipe::stages::search::darts::State =
        serde_json::from_slice(&read("search/state.json")).unwrap();
    let ss = s.search.as_ref().unwrap();
    let last = search.metrics.last().unwrap();
    assert_eq!(ss.epochs, 2);
    assert_eq!((ss.val_loss, ss.val_acc), (last.val_loss, last.val_acc));
    let metrics: Vec<nas_pipe::stages::retrain::EpochMetrics> =
        serde_json::from_slice(&read("retrain/metrics.json")).unwrap();
    let rs = s.retrain.as_ref().unwrap();
    assert_eq!(rs.epochs, metrics.len());
    assert_eq!(rs.train_loss, metrics.last().unwrap().train_loss);
    assert_eq!(
        rs.last_test.map(|t| t.acc),
        metrics.last().unwrap().test_acc
    );
    let lock = Lock::read(&run, "rep").unwrap();
    // Every stage but the report's own, with the lock's times.
    assert_eq!(s.stages.len(), lock.stages.len() - 1);
    for (st, e) in s.stages.iter().zip(&lock.stages) {
        assert_eq!(
            (st.stage, &st.started, st.seconds),
            (e.stage, &e.started, e.seconds)
        );
    }
    assert_eq!(
        s.genotype.as_deref(),
        Some(
            std::fs::read_to_string(run.join("genotype.ron"))
                .unwrap()
                .as_str()
        )
    );
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    for f in report::INPUTS
        .iter()
        .filter(|f| !f.starts_with("search/") || **f == "search/state.json")
    {
        assert!(run.join(f).exists(), "the fixture lacks input {f}");
    }
}

#[test]
fn report_is_byte_identical_when_rendered_again() {
    let run = report_copy("report-twice");
    let w = report::write(&run).unwrap();
    let first: Vec<Vec<u8>> = [&w.html, &w.md, &w.summary]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    // The runner records the report stage in the lock after writing it: that entry must not
    // change the report.
    let mut lock = Lock::read(&run, "rep").unwrap();
    let mut entry = lock.get(Stage::Report).unwrap().clone();
    entry.status = Status::Done;
    entry.finished = Some("2025-06-01T11:30:00Z".into());
    entry.seconds = 0.7;
    lock.set(entry);
    lock.write(&run).unwrap();
    for _ in 0..2 {
        let w = report::write(&run).unwrap();
        for (p, bytes) in [&w.html, &w.md, &w.summary].iter().zip(&first) {
            assert!(
                std::fs::read(p).unwrap() == *bytes,
                "{} changed when rendered again",
                p.display()
            );
        }
    }
    // No wall-clock time: the only dates in it are the lock's (2025-06-01).
    let today = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    for p in [&w.html, &w.md, &w.summary] {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(
            !text.contains(&today[..10]),
            "{} holds today's date",
            p.display()
        );
    }
}

#[test]
fn report_says_what_is_absent() {
    let run = report_copy("report-absent");
    for f in [
        "search/state.json",
        "validation.json",
        "profile.json",
        "nas-pipe.lock",
    ] {
        std::fs::remove_file(run.join(f)).unwrap();
    }
    let r = report::render(&run).unwrap();
    let html = &r.html;
    assert!(html_problems(html).is_empty(), "{:?}", html_problems(html));
    for (id, file) in [
        ("search", "search/state.json"),
        ("op-weights", "search/state.json"),
        ("validation", "validation.json"),
        ("latency", "profile.json"),
    ] {
        let s = section(html, id);
        assert!(
            s.contains(&format!("Not in this run: no <code>{file}</code>")),
            "section {id}: {s}"
        );
        assert!(!s.contains("<svg"), "section {id} draws without its data");
    }
    assert!(section(html, "run").contains("<code>nas-pipe.lock</code>"));
    // The rest is still there.
    for id in ["architecture", "retrain", "evaluation", "cost", "spec"] {
        assert!(!section(html, id).contains("Not in this run"), "{id}");
    }
    assert!(html.contains("not validated") && html.contains("not profiled"));
    let s = &r.summary;
    assert!(s.search.is_none() && s.validation.is_none() && s.latency.is_none());
    assert!(s.stages.is_empty() && s.nas_pipe_version.is_none());
    assert_eq!(s.headline.validation_passed, None);
    assert_eq!(
        s.missing,
        [
            "nas-pipe.lock",
            "search/state.json",
            "validation.json",
            "profile.json"
        ]
    );
    let md = &r.md;
    assert!(
        md.contains("_Not in this run: no `validation.json` — the validate stage did not run._")
    );
    assert!(md.contains("| validation | — |"), "{md}");

    // Nothing at all: every section says so, the name is the folder's.
    let empty = tempdir("report-empty").join("nothing-here");
    std::fs::create_dir_all(&empty).unwrap();
    let r = report::render(&empty).unwrap();
    assert!(
        html_problems(&r.html).is_empty(),
        "{:?}",
        html_problems(&r.html)
    );
    for id in SECTION_IDS {
        assert!(
            section(&r.html, id).contains("Not in this run"),
            "section {id} of an empty folder"
        );
    }
    assert_eq!(r.summary.pipeline, "nothing-here");
    // Everything but the multi-trial search's files (a search writes one kind).
    assert_eq!(r.summary.missing.len(), report::INPUTS.len() - 2);
    // A folder that is not there is an error, not an empty report.
    let e = report::render(&empty.join("nope")).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("not a run folder"), "{e}");
}

#[test]
fn report_draws_a_chain_space_as_text_and_layer_heatmaps() {
    let dir = tempdir("report-chain");
    let text = format!(
        r#"Pipeline(
    name: "chain",
    seed: 1,
    device: Cpu,
    data: Synthetic(channels: 3, size: 8, classes: 3, train: 32, test: 16),
    space: "{}",
    search: Darts(
        epochs: 2, batch_size: 16, channels: 4, layers: 1,
        weights: Sgd(lr: 0.025, lr_min: 0.001, weight_decay: 3e-4, grad_clip: 5.0),
        arch: Adam(lr: 3e-2, betas: (0.5, 0.999), weight_decay: 1e-3),
    ),
    retrain: Retrain(channels: 4, layers: 1, epochs: 1, batch_size: 16,
        optimizer: Sgd(lr: 0.025, weight_decay: 3e-4, grad_clip: 5.0)),
)"#,
        root().join("schemas/mobilenet-chain.ron").display()
    );
    let p = dir.join("chain.ron");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("out");
    for stage in ["search", "train"] {
        run_ok(bin().arg(stage).arg(&p).arg("--out").arg(&out));
    }
    let run = out.join("chain");
    let r = report::render(&run).unwrap();
    assert!(
        html_problems(&r.html).is_empty(),
        "{:?}",
        html_problems(&r.html)
    );
    let arch = section(&r.html, "architecture");
    assert!(!arch.contains("<svg"), "a chain has no cell to draw");
    assert!(arch.contains("<pre>architecture in space &quot;mobilenet-chain&quot;"));
    let ops = section(&r.html, "op-weights");
    assert!(ops.contains("Searchable layers"));
    // Layer 0 has one candidate; the stage layers four (a stage's first layer cannot skip).
    assert!(ops.contains(&svg_text("layer 0")) && ops.contains(&svg_text("layer 4")));
    assert!(ops.contains(&svg_text("ir_k5_e6")) && ops.contains(&svg_text("ir_k3_e3")));
    assert!(r.summary.stages.is_empty() && r.summary.seed.is_none());
}

#[test]
fn report_malformed_artifacts_are_errors_naming_the_file() {
    let run = report_copy("report-malformed");
    let keep = |f: &str| std::fs::read(run.join(f)).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "validation.json",
            b"{\"samples\": 3".to_vec(),
            "validation.json",
        ),
        ("profile.json", b"[]".to_vec(), "profile.json"),
        (
            "search/state.json",
            b"not json".to_vec(),
            "search/state.json",
        ),
        (
            "retrain/metrics.json",
            b"{}".to_vec(),
            "retrain/metrics.json",
        ),
        (
            "nas-pipe.lock",
            b"{\"schema_version\": 99}".to_vec(),
            "nas-pipe.lock",
        ),
        (
            "pipeline.ron",
            b"Pipeline(name: \"x\",\n  seed: oops)".to_vec(),
            "pipeline.ron:2:",
        ),
        (
            "genotype.ron",
            b"Genotype(version: 1, cells: 3)".to_vec(),
            "genotype.ron:1:",
        ),
        ("retrain/model.ron", b"ModelCard(".to_vec(), "model.ron"),
    ];
    for (file, bytes, named) in cases {
        let original = keep(file);
        std::fs::write(run.join(file), &bytes).unwrap();
        let e = report::render(&run).map(|_| ()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(named), "{file}: {msg}");
        assert_eq!(e.exit_code(), 2);
        std::fs::write(run.join(file), original).unwrap();
    }
    // Well-formed JSON that breaks the artifact's own rules.
    let path = run.join("retrain/evaluation.json");
    let original = std::fs::read(&path).unwrap();
    let mut e: nas_pipe::stages::retrain::Evaluation = serde_json::from_slice(&original).unwrap();
    e.confusion.pop();
    std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
    let msg = report::render(&run).map(|_| ()).unwrap_err().to_string();
    assert!(
        msg.contains("evaluation.json") && msg.contains("confusion"),
        "{msg}"
    );
    std::fs::write(&path, original).unwrap();
    let path = run.join("search/state.json");
    let mut s: nas_pipe::stages::search::darts::State =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    s.history[1].cells[0].1.pop();
    std::fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
    let msg = report::render(&run).map(|_| ()).unwrap_err().to_string();
    assert!(
        msg.contains("state.json") && msg.contains("epoch 2"),
        "{msg}"
    );
    // Nothing was written.
    assert!(!run.join(report::HTML).exists());
}

#[test]
fn cell_dot_is_the_dot_cluster_of_that_cell() {
    let s = load_space("schemas/darts.ron", Overrides::default());
    let a = arch(&s, "DARTS_V2");
    let whole = nas_pipe::space::show::dot(&s, Some(&a));
    for c in 0..s.cells.len() {
        let one = nas_pipe::space::show::cell_dot(&s, &a, c).unwrap();
        assert!(one.starts_with(&format!(
            "digraph \"{}\" {{\n  rankdir=LR;",
            s.cells[c].name
        )));
        assert!(!one.contains("subgraph"));
        // The statements are the cluster's, one level less indented.
        let body: Vec<&str> = one
            .lines()
            .filter(|l| l.contains(&format!("c{c}_")))
            .collect();
        let cluster: Vec<String> = whole
            .lines()
            .filter(|l| l.contains(&format!("c{c}_")))
            .map(|l| l.replacen("    ", "  ", 1))
            .collect();
        assert_eq!(body, cluster);
        let op = ["sep_conv_3x3", "max_pool_3x3"][c];
        assert!(
            body.iter()
                .any(|l| l.contains(&format!("[label=\"{op}\"]")))
        );
    }
    assert!(nas_pipe::space::show::cell_dot(&s, &a, 9).is_none());
}

#[test]
fn report_opens_in_chromium_without_console_errors() {
    use std::io::Write as _;
    let chromium = Path::new("/usr/bin/chromium");
    let python = Command::new("python3").arg("--version").output();
    if !chromium.exists() || python.is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED report_opens_in_chromium_without_console_errors: needs /usr/bin/chromium and python3"
        );
        return;
    }
    let run = report_copy("report-chromium");
    let w = report::write(&run).unwrap();
    let shot = run.join("report.png");
    let check = |page: &Path, shot: Option<&Path>| {
        let mut c = Command::new("bash");
        c.arg(root().join("scripts/check-report.sh")).arg(page);
        if let Some(s) = shot {
            c.arg(s);
        }
        c.output().unwrap()
    };
    let o = check(&w.html, Some(&shot));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    assert!(out.contains("no console errors or warnings"), "{out}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );
    // The check catches what it is for: a console error, a warning, an exception and a
    // missing resource.
    let bad = run.join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><head><title>bad</title></head><body><p>x</p>\
         <img src=\"missing.png\" alt=\"\"><script>console.error('deliberate error');\
         console.warn('deliberate warning'); nosuchfunction();</script></body></html>",
    )
    .unwrap();
    let o = check(&bad, None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for needle in [
        "console.error: deliberate error",
        "console.warning: deliberate warning",
        "uncaught exception: ReferenceError",
        "missing.png",
    ] {
        assert!(out.contains(needle), "missed {needle:?}:\n{out}");
    }
}

// ---- nas-pipe run: stages, cache, resume, status ----

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

    let p = staged_pipeline(&dir, "e", "0.02");
    let st = run_ok(bin().args(["status"]).arg(&p).arg("--out").arg(&out));
    let state_of = |st: &str, stage: &str| -> String {
        st.lines()
            .find(|l| l.trim_start().starts_with(&format!("{stage} ")))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
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
    let resolved = pipeline::load(&mut sources, &p).unwrap();
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
        assert!(stdout.contains("validation FAILED"), "{stdout}");
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
    for strategy in ["random", "evolution", "reinforce"] {
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
