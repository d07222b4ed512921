//! The layer rule of `docs/architecture.md`: every `crate::` path in `src/` names a module
//! of a lower layer or of its own module, and no stage names another stage.

use std::path::Path;

use crate::common::root;

/// The layers from the bottom up; a module may name modules of earlier rows only (and its
/// own). Stages share one row and never name each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["fsutil", "progress"],
    &["spec"],
    &["device"],
    &["kernels"],
    &["nn"],
    &["onnx"],
    &["runtime"],
    &["data"],
    &["ops"],
    &["space"],
    &["nets"],
    &["run"],
    &[
        "stages::search",
        "stages::derive",
        "stages::retrain",
        "stages::export",
        "stages::validate",
        "stages::profile",
        "stages::predict",
        "stages::report",
    ],
    &["pipeline"],
    &["cli"],
];

fn layer(unit: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&unit))
}

/// The unit a module path belongs to: its first segment, or `stages::<stage>`.
fn unit(path: &[&str]) -> String {
    match path {
        ["stages", stage, ..] => format!("stages::{stage}"),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

/// The module path of a source file: `src/stages/search/trials.rs` → `stages::search::trials`.
fn module_of(file: &Path, src: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod")) {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path named in code (comments left out), with its line number.
/// `use crate::{a, b::c}` names each of its members.
fn named_paths(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let members: Vec<&str> = match after.strip_prefix('{') {
                Some(group) => group.split(['}', ',']).collect(),
                None => vec![after],
            };
            for m in members {
                let path: Vec<String> = m
                    .trim()
                    .split("::")
                    .map(|s| {
                        s.chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect()
                    })
                    .take_while(|s: &String| !s.is_empty())
                    .collect();
                if !path.is_empty() {
                    out.push((i + 1, path));
                }
            }
            rest = after;
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Checks one file: the names of its crate paths that break the rule.
fn back_edges(file: &Path, src: &Path) -> Vec<String> {
    let module = module_of(file, src);
    let refs: Vec<&str> = module.iter().map(String::as_str).collect();
    let from = unit(&refs);
    if matches!(from.as_str(), "lib" | "main" | "stages") {
        return Vec::new();
    }
    let Some(own) = layer(&from) else {
        return vec![format!("{}: module {from} is in no layer", file.display())];
    };
    let text = std::fs::read_to_string(file).unwrap();
    let mut bad = Vec::new();
    for (line, path) in named_paths(&text) {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let to = unit(&refs);
        if to == from || matches!(to.as_str(), "Error" | "Result" | "stages") {
            continue;
        }
        match layer(&to) {
            Some(l) if l < own => {}
            Some(l) if l == own => bad.push(format!(
                "{}:{line}: {from} names its sibling {}",
                file.display(),
                path.join("::")
            )),
            Some(_) => bad.push(format!(
                "{}:{line}: {from} names {} of a higher layer",
                file.display(),
                path.join("::")
            )),
            None => bad.push(format!(
                "{}:{line}: {} is in no layer",
                file.display(),
                path.join("::")
            )),
        }
    }
    bad
}

#[test]
fn imports_only_run_downward() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let bad: Vec<String> = files.iter().flat_map(|f| back_edges(f, &src)).collect();
    assert!(
        bad.is_empty(),
        "{} back-edges (docs/architecture.md has the layers):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The checker itself sees a back-edge, a sibling stage, a grouped import and ignores
/// comments.
#[test]
fn layer_check_finds_back_edges() {
    let paths = named_paths(
        "use crate::{ops::Op, stages::report::x};\n// crate::cli::run\nlet a = crate::nets::model::Model;",
    );
    let units: Vec<(usize, String)> = paths
        .iter()
        .map(|(l, p)| (*l, unit(&p.iter().map(String::as_str).collect::<Vec<_>>())))
        .collect();
    assert_eq!(
        units,
        [
            (1, "ops".to_string()),
            (1, "stages::report".to_string()),
            (3, "nets".to_string())
        ]
    );
    assert!(layer("stages::search") == layer("stages::report"));
    assert!(layer("space") > layer("ops") && layer("spec") < layer("ops"));
}
