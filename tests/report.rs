//! The report: its sections, summary, determinism, missing and malformed artifacts,
//! and the page in a browser.

use std::path::{Path, PathBuf};
use std::process::Command;

use nas_pipe::run::Stage;
use nas_pipe::run::lock::{Entry, KeyParts, Lock, Status};
use nas_pipe::space::Overrides;
use nas_pipe::spec::Sources;
use nas_pipe::stages::report;

use crate::common::*;

// ---- Report ----

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
    let p = nas_pipe::pipeline::resolve::load(&mut Sources::default(), pipeline_file).unwrap();
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
    let v = nas_pipe::run::validation::Validation {
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
    use nas_pipe::run::profile::Model;
    use nas_pipe::run::profile::Plan;
    use nas_pipe::run::profile::Report;
    use nas_pipe::run::profile::Row;
    use nas_pipe::runtime::measure::Latency;
    use nas_pipe::runtime::measure::Machine;
    let row = |batch: usize, ms: f64| Row {
        batch,
        threads: 1,
        latency_ms: Latency::of(&[ms, ms * 1.1, ms * 0.9, ms * 1.5, ms]),
        images_per_s: batch as f64 * 1e3 / ms,
    };
    let r = Report {
        version: nas_pipe::run::profile::SCHEMA_VERSION,
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
        let dir = fixture_dir("report-fixture");
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

/// A copy of the fixture run folder to change: its temp folder and the run folder in it.
fn report_copy(name: &str) -> (Scratch, PathBuf) {
    let tmp = tempdir(name);
    let run = tmp.join("run");
    copy_dir(report_fixture(), &run);
    for f in [report::HTML, report::MARKDOWN, report::SUMMARY] {
        let _ = std::fs::remove_file(run.join(f));
    }
    (tmp, run)
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
    let e: nas_pipe::nets::train::Evaluation =
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
    // Selection is on validation; the test part is evaluated once, on the last weights.
    assert!(
        retrain.contains("selected on the validation part") && !retrain.contains("test set"),
        "{retrain}"
    );
    assert!(
        retrain.contains("validation (evaluated epochs)"),
        "{retrain}"
    );
    // The confusion matrix with counts and class names, the per-class table.
    let eval = section(html, "evaluation");
    assert!(eval.contains("Confusion matrix") && eval.contains("true class"));
    assert!(
        eval.contains("Weights <code>last.safetensors</code> on")
            && eval.contains("evaluated once after the last epoch"),
        "{eval}"
    );
    let count = e.confusion[1][1].to_string();
    assert!(eval.contains(&svg_text(&count)), "{eval}");
    assert_eq!(eval.matches("<tr><td>").count(), e.classes.len());
    // Validation numbers, latency table and charts, counts, the spec.
    let v = section(html, "validation");
    assert!(v.contains("top-1 agreement") && v.contains("≤ 1.00e-4"));
    let lat = section(html, "latency");
    assert_eq!(lat.matches("<svg").count(), 2);
    assert!(lat.contains("p99 ms") && lat.contains("Throughput"));
    let card = nas_pipe::run::retrain::load_model(&run.join("retrain"))
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
        "(`best.safetensors`, selected on the validation part)",
        "Weights `last.safetensors` on",
        "evaluated once after the last epoch (nothing was selected on them)",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    assert!(!md.contains("selected on the test"), "{md}");
    assert!(!md.contains("Not in this run"), "{md}");
}

#[test]
fn report_summary_copies_the_artifacts_numbers() {
    let (_tmp, run) = report_copy("report-summary");
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
    let e: nas_pipe::nets::train::Evaluation =
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
    let v: nas_pipe::run::validation::Validation =
        serde_json::from_slice(&read("validation.json")).unwrap();
    assert_eq!(s.validation.as_ref(), Some(&v));
    assert_eq!(s.headline.validation_passed, Some(v.passed));
    let p: nas_pipe::run::profile::Report = serde_json::from_slice(&read("profile.json")).unwrap();
    let lat = s.latency.as_ref().unwrap();
    assert_eq!(lat.rows, p.rows);
    assert_eq!(lat.ort_version, p.ort_version);
    let b1 = p.rows.iter().find(|r| r.batch == 1).unwrap();
    assert_eq!(s.headline.latency_p50_ms_batch1, Some(b1.latency_ms.p50));
    assert_eq!(s.machine.as_ref(), Some(&p.machine));
    let card = nas_pipe::run::retrain::load_model(&run.join("retrain"))
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
    let search: nas_pipe::run::search::State =
        serde_json::from_slice(&read("search/state.json")).unwrap();
    let ss = s.search.as_ref().unwrap();
    let last = search.metrics.last().unwrap();
    assert_eq!(ss.epochs, 2);
    assert_eq!((ss.val_loss, ss.val_acc), (last.val_loss, last.val_acc));
    let metrics: Vec<nas_pipe::run::retrain::EpochMetrics> =
        serde_json::from_slice(&read("retrain/metrics.json")).unwrap();
    let rs = s.retrain.as_ref().unwrap();
    assert_eq!(rs.epochs, metrics.len());
    assert_eq!(rs.train_loss, metrics.last().unwrap().train_loss);
    assert_eq!(rs.last_val.map(|t| t.acc), metrics.last().unwrap().val_acc);
    let best = metrics
        .iter()
        .filter_map(|e| Some((e.epoch, e.val_acc?)))
        .fold(None, |b: Option<(usize, f64)>, (e, a)| match b {
            Some((_, ba)) if ba >= a => b,
            _ => Some((e, a)),
        });
    assert_eq!(rs.best_val.map(|t| (t.epoch, t.acc)), best);
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
    // Every input but the multi-trial search's files and a budget's plan (this run has
    // neither).
    for f in report::INPUTS
        .iter()
        .filter(|f| !f.starts_with("search/") || **f == "search/state.json")
        .filter(|f| **f != "plan.json")
    {
        assert!(run.join(f).exists(), "the fixture lacks input {f}");
    }
}

#[test]
fn report_is_byte_identical_when_rendered_again() {
    let (_tmp, run) = report_copy("report-twice");
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
    let (_tmp, run) = report_copy("report-absent");
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
    let tmp = tempdir("report-empty");
    let empty = tmp.join("nothing-here");
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
    // Everything but the multi-trial search's files (a search writes one kind) and a
    // budget's plan (missing only from a budgeted run).
    assert_eq!(r.summary.missing.len(), report::INPUTS.len() - 4);
    assert!(!r.summary.missing.iter().any(|f| f == "plan.json"));
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
    // Heatmap row labels end in two no-break spaces: the gap before the cells.
    let row = |op: &str| svg_text(&format!("{op}\u{a0}\u{a0}"));
    assert!(ops.contains(&row("ir_k5_e6")) && ops.contains(&row("ir_k3_e3")));
    assert!(r.summary.stages.is_empty() && r.summary.seed.is_none());
}

#[test]
fn report_malformed_artifacts_are_errors_naming_the_file() {
    let (_tmp, run) = report_copy("report-malformed");
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
    let mut e: nas_pipe::nets::train::Evaluation = serde_json::from_slice(&original).unwrap();
    e.confusion.pop();
    std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
    let msg = report::render(&run).map(|_| ()).unwrap_err().to_string();
    assert!(
        msg.contains("evaluation.json") && msg.contains("confusion"),
        "{msg}"
    );
    std::fs::write(&path, original).unwrap();
    let path = run.join("search/state.json");
    let mut s: nas_pipe::run::search::State =
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

/// Runs scripts/check-report.sh on a page (with a screenshot when asked); its exit status
/// and output. `None` (after saying the test is skipped) without Chromium or python3.
fn check_report(page: &Path, shot: Option<&Path>) -> (Option<i32>, String) {
    let mut c = Command::new("bash");
    c.arg(root().join("scripts/check-report.sh")).arg(page);
    if let Some(s) = shot {
        c.arg(s);
    }
    let o = c.output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), out)
}

/// True when the browser tests can run; otherwise says which test is skipped.
fn have_chromium(test: &str) -> bool {
    use std::io::Write as _;
    let chromium = Path::new("/usr/bin/chromium");
    let python = Command::new("python3").arg("--version").output();
    if !chromium.exists() || python.is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: needs /usr/bin/chromium and python3"
        );
        return false;
    }
    true
}

#[test]
fn report_opens_in_chromium_without_console_errors() {
    if !have_chromium("report_opens_in_chromium_without_console_errors") {
        return;
    }
    let (_tmp, run) = report_copy("report-chromium");
    let w = report::write(&run).unwrap();
    let shot = run.join("report.png");
    let (code, out) = check_report(&w.html, Some(&shot));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no console errors or warnings"), "{out}");
    assert!(out.contains("layout clean at 1200 and 640 px"), "{out}");
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
    let (code, out) = check_report(&bad, None);
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "console.error: deliberate error",
        "console.warning: deliberate warning",
        "uncaught exception: ReferenceError",
        "missing.png",
    ] {
        assert!(out.contains(needle), "missed {needle:?}:\n{out}");
    }
}

/// Every kind of report lays out cleanly at a wide and a narrow width: a full DARTS run,
/// one with most artifacts absent, and a multi-trial run.
#[test]
fn report_layout_is_clean_for_every_report_kind() {
    if !have_chromium("report_layout_is_clean_for_every_report_kind") {
        return;
    }
    let (_full_tmp, full) = report_copy("layout-full");
    let (_absent_tmp, absent) = report_copy("layout-absent");
    for f in ["search/state.json", "validation.json", "profile.json"] {
        std::fs::remove_file(absent.join(f)).unwrap();
    }
    let dir = tempdir("layout-trials");
    let out = dir.join("out");
    run_ok(
        bin()
            .arg("run")
            .arg(root().join("pipelines/nb201-evolution.ron"))
            .arg("--out")
            .arg(&out)
            .arg("-q"),
    );
    for run in [full, absent, out.join("nb201-evolution")] {
        let html = report::write(&run).unwrap().html;
        let (code, out) = check_report(&html, None);
        assert_eq!(code, Some(0), "{}:\n{out}", html.display());
    }
}

/// The layout check finds each kind of fault it looks for.
#[test]
fn report_layout_check_finds_each_fault() {
    if !have_chromium("report_layout_check_finds_each_fault") {
        return;
    }
    let dir = tempdir("layout-bad");
    let page = dir.join("bad.html");
    std::fs::write(&page, BAD_LAYOUT).unwrap();
    let (code, out) = check_report(&page, None);
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "the page is",
        "circle reaches",
        "text \"clipped label\" reaches",
        "\"overflowing-cell-content-without-breaks\" is",
        "\"82.5 M\" wraps onto 2 lines",
        "the word \"nor_conv_3x3~0\" breaks across lines",
        "the column \"empty\" has no value in any of its 2 rows",
        "clips \"hidden overflow text",
    ] {
        assert!(out.contains(needle), "missed {needle:?}:\n{out}");
    }
    // At a width where the page fits, only the width-independent faults remain.
    let wide = Command::new("bash")
        .arg(root().join("scripts/check-report.sh"))
        .arg(&page)
        .env("WIDTHS", "3000")
        .output()
        .unwrap();
    let wide = String::from_utf8_lossy(&wide.stdout);
    assert!(!wide.contains("the page is"), "{wide}");
    assert!(wide.contains("circle reaches"), "{wide}");
}

/// A page with one of each layout fault (see scripts/report-layout.js).
const BAD_LAYOUT: &str = r#"<!DOCTYPE html><html><head><title>bad layout</title>
<style>td.num { text-align: right; } .clip { width: 80px; overflow: hidden; white-space: nowrap; }
td.narrow { width: 40px; max-width: 40px; }</style></head><body><main>
<svg width="100" height="60" viewBox="0 0 100 60"><circle cx="98" cy="30" r="8"/>
<text x="70" y="20">clipped label</text></svg>
<table><thead><tr><th>name</th><th>empty</th><th class="num">MACs</th></tr></thead><tbody>
<tr><td class="narrow">overflowing-cell-content-without-breaks</td><td>—</td>
<td class="num" style="width:20px;max-width:20px;white-space:normal">82.5 M</td></tr>
<tr><td>b</td><td></td><td class="num">1</td></tr></tbody></table>
<p style="width:60px;overflow-wrap:anywhere">|nor_conv_3x3~0|</p>
<div class="clip">hidden overflow text that is far too long</div>
<div style="width:1500px">a wide block</div>
</main></body></html>"#;
