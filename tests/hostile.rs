//! Hostile input: include chains, files that are not files, and a deterministic mutation
//! test over every shipped spec and the ONNX reader. The bar is no panic, no abort and no
//! hang: every input is accepted or refused with an error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nas_pipe::pipeline::fuzz::{Kind, check_text};

use crate::common::{Rng, bin, fails, root, run_ok, tempdir};

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
