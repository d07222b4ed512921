//! What the report says, as plain text: the sections and their order, the notes for absent
//! artifacts, the run facts, and every table. The HTML and the Markdown renderings both
//! draw from here, so that they state the same facts with the same numbers.

use super::{Artifacts, Summary};
use crate::run::lock::{self, Status};
use crate::spec::pipeline::Data;

/// The report's sections: (anchor id, heading), in page order.
pub const SECTIONS: &[(&str, &str)] = &[
    ("run", "Run"),
    ("search", "Search"),
    ("op-weights", "Op weights during the search"),
    ("architecture", "Architecture"),
    ("retrain", "Retraining"),
    ("evaluation", "Evaluation"),
    ("validation", "Validation"),
    ("latency", "Latency"),
    ("cost", "Parameters and MACs"),
    ("spec", "Resolved spec"),
];

/// Why a section has nothing to show: the files it needs and what their absence means.
pub struct Absence {
    pub files: &'static [&'static str],
    pub why: &'static str,
}

pub const NO_LOCK: Absence = Absence {
    files: &[lock::FILE],
    why: "the stages were not run by the pipeline runner, so their times are unknown",
};
pub const NO_SEARCH: Absence = Absence {
    files: &[crate::run::dir::SEARCH_STATE],
    why: "the search did not run (the pipeline gives a fixed genotype) or finished no epoch",
};
pub const NO_HISTORY: Absence = Absence {
    files: &[crate::run::dir::SEARCH_STATE],
    why: "the op weights are recorded by the search, which did not run here",
};
pub const NO_ARCH: Absence = Absence {
    files: &["genotype.ron", crate::run::dir::retrained::CARD],
    why: "no architecture was derived or retrained",
};
pub const NO_GRAPHS: Absence = Absence {
    files: &[crate::run::dir::retrained::CARD],
    why: "the cell drawings need the retrained model's space",
};
pub const NO_RETRAIN: Absence = Absence {
    files: &[crate::run::dir::retrained::METRICS],
    why: "the retraining did not run or finished no epoch",
};
pub const NO_EVALUATION: Absence = Absence {
    files: &[crate::run::dir::retrained::EVALUATION],
    why: "the retraining has not finished its last epoch",
};
pub const NO_VALIDATION: Absence = Absence {
    files: &[crate::run::dir::VALIDATION],
    why: "the validate stage did not run",
};
pub const NO_PROFILE: Absence = Absence {
    files: &[crate::run::dir::PROFILE_JSON],
    why: "the profile stage did not run",
};
pub const NO_COST: Absence = Absence {
    files: &[
        crate::run::dir::retrained::CARD,
        crate::run::dir::PROFILE_JSON,
    ],
    why: "there is no model card and no profile",
};
pub const NO_SPEC: Absence = Absence {
    files: &[crate::run::dir::SPEC],
    why: "the run folder does not record its resolved spec",
};

/// The op-weights section of a multi-trial search.
pub const TRIALS_HAVE_NO_OP_WEIGHTS: &str = "A multi-trial search has no op weights: it \
    evaluates discrete architectures one at a time (see Search).";

/// A table of plain-text cells.
pub struct Table {
    pub head: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// Right-aligned (numeric) columns.
    pub numeric: Vec<bool>,
}

/// Keeps the items of `v` whose place in `keep` is true (all beyond its end).
fn retain_by<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| *k.next().unwrap_or(&true));
}

impl Table {
    /// Removes every column whose cells are all `-` (nothing measured), when there are
    /// rows.
    fn without_empty_columns(mut self) -> Table {
        if self.rows.is_empty() {
            return self;
        }
        let keep: Vec<bool> = (0..self.head.len())
            .map(|c| self.rows.iter().any(|r| r.get(c).is_some_and(|x| x != "-")))
            .collect();
        retain_by(&mut self.head, &keep);
        retain_by(&mut self.numeric, &keep);
        for r in &mut self.rows {
            retain_by(r, &keep);
        }
        self
    }

    fn new(head: &[(&'static str, bool)]) -> Table {
        Table {
            head: head.iter().map(|h| h.0).collect(),
            rows: Vec::new(),
            numeric: head.iter().map(|h| h.1).collect(),
        }
    }
}

// ---- Number formats ----

/// A fraction as a percentage with two decimals: 0.21875 → "21.88%".
pub fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// A duration: "0.48 s", "12.3 s", "4m 5s", "1h 2m 3s".
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".into();
    }
    if seconds < 10.0 {
        return format!("{seconds:.2} s");
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    humantime::format_duration(std::time::Duration::from_secs(seconds.round() as u64)).to_string()
}

/// Milliseconds with three decimals.
pub fn ms(x: f64) -> String {
    format!("{x:.3}")
}

/// A loss or another plain number with four decimals.
pub fn num(x: f64) -> String {
    format!("{x:.4}")
}

/// Scientific notation with three significant digits (logit differences, learning rates).
pub fn sci(x: f64) -> String {
    format!("{x:.2e}")
}

pub fn thousands(n: u64) -> String {
    crate::space::show::thousands(n)
}

/// A count with three significant digits and a unit: 6,876 → "6,876"; 3349342 → "3.35 M".
pub fn compact(n: u64) -> String {
    let x = n as f64;
    let (v, unit) = match n {
        0..100_000 => return thousands(n),
        100_000..1_000_000 => (x / 1e3, "K"),
        1_000_000..1_000_000_000 => (x / 1e6, "M"),
        _ => (x / 1e9, "G"),
    };
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {unit}")
}

/// An RFC 3339 time as `2025-01-31 12:00:00 UTC` (fractions of a second dropped).
pub fn when(rfc3339: &str) -> String {
    let s = rfc3339.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    let s = s.split('.').next().unwrap_or(s);
    format!("{} UTC", s.replacen('T', " ", 1))
}

// ---- Labels ----

/// The label of edge `e` of cell type `cell`, when the space has it: "state 0 → node 2".
pub fn edge_label(space: Option<&crate::space::Space>, cell: &str, e: usize) -> String {
    let edge = space
        .and_then(|s| s.cells.iter().find(|c| c.name == cell))
        .and_then(|c| c.edges.get(e));
    match edge {
        Some(edge) => format!("state {} → node {}", edge.from, edge.to),
        None => format!("edge {e}"),
    }
}

/// The names of the `k` candidates of cell type `cell` (`slot`: of searchable layer
/// `slot`) when the space has them, else "op 0", "op 1", ...
pub fn candidate_names(
    space: Option<&crate::space::Space>,
    cell: Option<&str>,
    slot: usize,
    k: usize,
) -> Vec<String> {
    let names = space.and_then(|s| {
        let cands = match cell {
            Some(cell) => &s.cells.iter().find(|c| c.name == cell)?.candidates,
            None => &s.slots.get(slot)?.candidates,
        };
        let names: Vec<String> = cands
            .iter()
            .map(|&x| s.candidate_name(x).to_string())
            .collect();
        (names.len() == k).then_some(names)
    });
    names.unwrap_or_else(|| (0..k).map(|i| format!("op {i}")).collect())
}

fn data(d: &Data) -> String {
    let limit = |l: &Option<crate::spec::Spanned<u32>>| match l {
        Some(n) => format!(", first {} training images", thousands(n.value as u64)),
        None => String::new(),
    };
    match d {
        Data::FashionMnist { dir, limit: l } => format!("Fashion-MNIST in {dir}{}", limit(l)),
        Data::Mnist { dir, limit: l } => format!("MNIST in {dir}{}", limit(l)),
        Data::Cifar10 { dir, limit: l } => format!("CIFAR-10 in {dir}{}", limit(l)),
        Data::Synthetic {
            channels,
            size,
            classes,
            train,
            test,
        } => format!(
            "synthetic {channels}×{size}×{size}, {classes} classes, {train} training and {test} test images"
        ),
        Data::ImageFolder { dir, image } => format!("image folder {dir}{}", images(image)),
        Data::Csv { file, image, .. } => format!("CSV manifest {file}{}", images(image)),
        Data::Npy {
            images: i, image, ..
        } => format!("NumPy arrays {i}{}", images(image)),
    }
}

/// `, 3×64×64 (Crop), first 1,000 training images`.
fn images(o: &crate::spec::pipeline::ImageOptions) -> String {
    let (c, s) = (o.channels.value, o.size.value);
    let limit = match &o.limit {
        Some(n) => format!(", first {} training images", thousands(n.value as u64)),
        None => String::new(),
    };
    format!(" as {c}×{s}×{s} ({:?}){limit}", o.resize)
}

// ---- Facts ----

/// When the run's recorded stages began and ended, and the wall time in between.
pub fn span(a: &Artifacts) -> Option<(String, String, f64)> {
    let lock = a.lock.as_ref()?;
    let start = lock.stages.iter().map(|e| e.started.as_str()).min()?;
    let end = lock
        .stages
        .iter()
        .filter_map(|e| e.finished.as_deref())
        .max()?;
    let t0 = humantime::parse_rfc3339_weak(start).ok()?;
    let t1 = humantime::parse_rfc3339_weak(end).ok()?;
    let wall = t1.duration_since(t0).ok()?.as_secs_f64();
    Some((when(start), when(end), wall))
}

/// The run facts: (name, value) pairs; unknown facts are left out.
pub fn run_facts(a: &Artifacts, s: &Summary) -> Vec<(&'static str, String)> {
    let mut f = vec![("pipeline", s.pipeline.clone())];
    if let Some(v) = &s.nas_pipe_version {
        f.push(("nas-pipe version", v.clone()));
    }
    if let Some(p) = &a.pipeline {
        f.push(("seed", p.spec.seed.to_string()));
        f.push(("data", data(&p.spec.data.value)));
        if let Some(n) = a.skipped.filter(|&n| n > 0) {
            f.push((
                "images skipped",
                format!("{n} unreadable (data/skipped.json)"),
            ));
        }
        f.push(("space", p.spec.space.value.clone()));
        if let Some(g) = &p.spec.genotype {
            f.push(("fixed genotype", g.value.clone()));
        }
    }
    if let Some(d) = &s.device {
        f.push(("device (training)", d.clone()));
    }
    if let Some(v) = &s.ort_version {
        f.push(("ONNX Runtime", v.clone()));
    }
    if let Some(p) = &a.profile {
        f.push(("execution provider", p.execution_provider.clone()));
        f.push(("CPU", p.machine.cpu.clone()));
        f.push(("cores", p.machine.cores.to_string()));
    }
    if let Some((start, end, wall)) = span(a) {
        f.push(("first stage started", start));
        f.push(("last stage finished", end));
        f.push(("wall time", duration(wall)));
    }
    f
}

/// The stages of the lock file: status, start, duration, device.
pub fn stage_table(a: &Artifacts) -> Option<Table> {
    let lock = a.lock.as_ref()?;
    let mut t = Table::new(&[
        ("stage", false),
        ("status", false),
        ("started", false),
        ("duration", true),
        ("device", false),
        ("note", false),
    ]);
    let notes = lock.stages.iter().any(|e| e.note.is_some());
    if !notes {
        t.head.pop();
        t.numeric.pop();
    }
    for e in &lock.stages {
        let mut row = vec![
            e.stage.name().to_string(),
            match e.status {
                Status::Done => "done".into(),
                Status::Running => "running or stopped".into(),
            },
            when(&e.started),
            match e.finished {
                Some(_) => duration(e.seconds),
                None => "—".into(),
            },
            e.parts.device.clone(),
        ];
        if notes {
            row.push(e.note.clone().unwrap_or_default());
        }
        t.rows.push(row);
    }
    Some(t)
}

/// A budgeted run's plan against its actual times: a row per part and the total, and a
/// sentence on how the run kept to the budget.
pub fn budget_table(b: &super::BudgetSummary) -> (Table, String) {
    let mut t = Table::new(&[
        ("part", false),
        ("plan", false),
        ("planned", true),
        ("actual", true),
    ]);
    let actual = |a: Option<f64>| a.map_or("—".to_string(), duration);
    let work = |p: &super::BudgetPart, unit: &str| match (p.epochs, p.images) {
        (Some(e), Some(n)) => format!(
            "{e} epoch{} over {} images{}",
            if e == 1 { "" } else { "s" },
            thousands(n.into()),
            if e == 1 { "" } else { unit }
        ),
        _ => String::new(),
    };
    t.rows.push(vec![
        "measuring".into(),
        "a few steps of each network".into(),
        duration(b.calibration_s),
        duration(b.calibration_s),
    ]);
    for (name, part, unit) in [("search", &b.search, ""), ("retrain", &b.retrain, " each")] {
        if let Some(p) = part {
            t.rows.push(vec![
                name.into(),
                work(p, unit),
                duration(p.planned_s),
                actual(p.actual_s),
            ]);
        }
    }
    t.rows.push(vec![
        "closing stages".into(),
        "export, validate, profile".into(),
        duration(b.after.planned_s),
        actual(b.after.actual_s),
    ]);
    t.rows.push(vec![
        "total".into(),
        format!("budget {}", duration(b.total_s)),
        duration(b.planned_s),
        actual(b.actual_s),
    ]);
    let text = match b.actual_s {
        Some(a) => format!(
            "The run took {} of its {} budget ({:.1}%).",
            duration(a),
            duration(b.total_s),
            100.0 * a / b.total_s
        ),
        None => "The run has not finished every planned stage.".to_string(),
    };
    let paced = b.retrain.as_ref().and_then(|r| {
        let planned = u64::from(r.epochs?) * u64::from(r.images?);
        let (ran, epochs) = (r.ran_images?, r.ran_epochs?);
        (ran != planned).then(|| {
            format!(
                " Retraining was paced to the time left: {epochs} epoch{} of {} images in all, against the plan's {} of {}.",
                if epochs == 1 { "" } else { "s" },
                thousands(ran),
                r.epochs.unwrap_or(0),
                thousands(planned)
            )
        })
    });
    (t, text + &paced.unwrap_or_default())
}

/// The search, one row per epoch.
pub fn search_table(a: &Artifacts) -> Option<Table> {
    let s = a.search.as_ref()?;
    let mut t = Table::new(&[
        ("epoch", true),
        ("lr", true),
        ("train loss", true),
        ("train acc", true),
        ("val loss", true),
        ("val acc", true),
        ("time", true),
        ("images/s", true),
    ]);
    for m in &s.metrics {
        t.rows.push(vec![
            (m.epoch + 1).to_string(),
            sci(m.lr),
            num(m.train_loss),
            pct(m.train_acc),
            num(m.val_loss),
            pct(m.val_acc),
            duration(m.seconds),
            crate::progress::rate_text(m.images_per_sec),
        ]);
    }
    Some(t)
}

/// The Pareto front of a multi-trial search, one row per point, best accuracy first.
pub fn front_table(a: &Artifacts) -> Option<Table> {
    let f = a.front.as_ref()?;
    let mut t = Table::new(&[
        ("#", true),
        ("architecture", false),
        ("accuracy (search)", true),
        ("report signal", true),
        ("params", true),
        ("MACs", true),
        ("latency (ms)", true),
        ("exported: ONNX Runtime p50 (ms)", true),
    ]);
    for p in &f.points {
        t.rows.push(vec![
            (p.n + 1).to_string(),
            p.nb201.clone().unwrap_or_else(|| p.key.clone()),
            pct(p.accuracy),
            p.report.map_or("-".into(), pct),
            thousands(p.params),
            compact(p.macs),
            p.latency_ms.map_or("-".into(), ms),
            match (&p.export, p.profiled_ms) {
                (Some(e), Some(l)) => format!("{} ({e})", ms(l)),
                (Some(e), None) => e.clone(),
                _ => "-".into(),
            },
        ]);
    }
    Some(t.without_empty_columns())
}

/// A search on workers in one sentence: how many, over how long, how busy, who did what.
pub fn workers_text(a: &Artifacts) -> Option<String> {
    let t = a.timeline.as_ref()?;
    if t.workers.is_empty() {
        return None;
    }
    let each: Vec<String> = t
        .workers
        .iter()
        .map(|w| format!("{} {}", w.worker, w.spans.len()))
        .collect();
    Some(format!(
        "Evaluated on {} worker{} over {}, busy {} of their time (evaluations each: {}).",
        t.workers.len(),
        if t.workers.len() == 1 { "" } else { "s" },
        duration(t.span()),
        t.utilisation().map_or("-".into(), pct),
        each.join(", ")
    ))
}

/// The trials that failed on workers for good, with their errors.
fn failed_text(failed: &[&crate::run::trials::Record]) -> String {
    if failed.is_empty() {
        return String::new();
    }
    let each: Vec<String> = failed
        .iter()
        .map(|r| format!("proposal {} {}", r.n + 1, r.failed.as_deref().unwrap_or("")))
        .collect();
    format!(", {} trials failed ({})", failed.len(), each.join("; "))
}

/// A multi-trial search in one sentence.
pub fn trials_text(a: &Artifacts) -> Option<String> {
    let t = a.trials.as_ref()?;
    let failed: Vec<&crate::run::trials::Record> =
        t.records.iter().filter(|r| r.failed.is_some()).collect();
    let rejected = t.records.len() - t.evaluations() - failed.len();
    let mut s = format!(
        "{} search: {} of {} evaluations{}{}{}",
        t.strategy,
        t.evaluations(),
        t.budget,
        if rejected > 0 {
            format!(", {rejected} proposals rejected by constraints before evaluation")
        } else {
            String::new()
        },
        failed_text(&failed),
        if t.finished { "" } else { " (not finished)" }
    );
    if let Some(c) = crate::run::trials::Correlations::of(&t.records) {
        s.push_str(&format!(
            "; zero-cost proxies' Spearman ρ with the search signal: {}",
            c.text()
        ));
    }
    if let Some(b) = t.best() {
        // A training evaluator computes the report signal for the front only.
        let report = b.report.or_else(|| {
            a.front
                .as_ref()?
                .points
                .iter()
                .find(|p| p.key == b.key)?
                .report
        });
        s += &format!(
            "; returned {} (proposal {}) at {} search accuracy{}",
            b.nb201.as_deref().unwrap_or(&b.key),
            b.n + 1,
            pct(b.accuracy.unwrap_or(0.0)),
            report.map_or(String::new(), |r| format!(", {} {}", t.report, pct(r)))
        );
    }
    s.push('.');
    Some(s)
}

/// The retraining, one row per epoch.
pub fn retrain_table(a: &Artifacts) -> Option<Table> {
    let m = a.metrics.as_ref()?;
    let mut t = Table::new(&[
        ("epoch", true),
        ("lr first → last", true),
        ("drop path", true),
        ("train loss", true),
        ("train acc", true),
        ("val loss", true),
        ("val acc", true),
        ("time", true),
        ("images/s", true),
    ]);
    let or_dash = |v: Option<f64>, f: fn(f64) -> String| v.map_or("—".to_string(), f);
    for e in m {
        t.rows.push(vec![
            (e.epoch + 1).to_string(),
            format!("{} → {}", sci(e.lr.0), sci(e.lr.1)),
            format!("{:.3}", e.drop_path),
            num(e.train_loss),
            pct(e.train_acc),
            or_dash(e.val_loss, num),
            or_dash(e.val_acc, pct),
            duration(e.seconds),
            crate::progress::rate_text(e.images_per_sec),
        ]);
    }
    Some(t)
}

/// How `best.safetensors` was chosen and which weights the rest of the run uses, in plain
/// words (`code` wraps a file name as the format writes code).
pub fn selection(best: super::EpochVal, code: fn(&str) -> String) -> String {
    format!(
        "Best validation accuracy {} after epoch {} ({}, selected on the validation part); the \
         export, the ONNX check and the test evaluation use the last epoch's weights ({}).",
        pct(best.acc),
        best.epoch + 1,
        code(crate::run::dir::model_file::BEST),
        code(crate::run::dir::model_file::LAST)
    )
}

/// What the test figures are: which weights, how many images, and that the test part was
/// evaluated once and selected nothing.
pub fn test_once(weights: &str, images: usize, code: fn(&str) -> String) -> String {
    format!(
        "Weights {} on {} test images, evaluated once after the last epoch (nothing was \
         selected on them)",
        code(weights),
        thousands(images as u64)
    )
}

/// Test accuracy per class.
pub fn class_table(s: &Summary) -> Option<Table> {
    let e = s.evaluation.as_ref()?;
    let mut t = Table::new(&[
        ("class", false),
        ("images", true),
        ("right", true),
        ("accuracy", true),
    ]);
    for c in &e.per_class {
        t.rows.push(vec![
            c.class.clone(),
            thousands(c.images),
            thousands((c.accuracy * c.images as f64).round() as u64),
            pct(c.accuracy),
        ]);
    }
    Some(t)
}

/// The validation's measures against the pipeline's tolerances.
pub fn validation_table(a: &Artifacts) -> Option<Table> {
    let v = a.validation.as_ref()?;
    let mut t = Table::new(&[
        ("measure", false),
        ("value", true),
        ("required", true),
        ("met", false),
    ]);
    let met = |ok: bool| if ok { "yes" } else { "NO" }.to_string();
    t.rows = vec![
        vec![
            "images compared".into(),
            thousands(v.samples as u64),
            String::new(),
            String::new(),
        ],
        vec![
            "largest absolute logit difference".into(),
            sci(v.max_abs_diff),
            format!("≤ {}", sci(v.max_abs_diff_allowed)),
            met(v.max_abs_diff <= v.max_abs_diff_allowed),
        ],
        vec![
            "mean absolute logit difference".into(),
            sci(v.mean_abs_diff),
            String::new(),
            String::new(),
        ],
        vec![
            "top-1 agreement".into(),
            pct(v.top1_agreement),
            format!("≥ {}", pct(v.min_top1_agreement)),
            met(v.top1_agreement >= v.min_top1_agreement),
        ],
        vec![
            "accuracy in ONNX Runtime".into(),
            pct(v.ort_accuracy),
            String::new(),
            String::new(),
        ],
        vec![
            "accuracy in Candle".into(),
            pct(v.candle_accuracy),
            String::new(),
            String::new(),
        ],
        vec![
            "verdict".into(),
            if v.passed { "passed" } else { "FAILED" }.into(),
            String::new(),
            String::new(),
        ],
    ];
    Some(t)
}

/// Every profile row.
pub fn latency_table(a: &Artifacts) -> Option<Table> {
    let p = a.profile.as_ref()?;
    let mut t = Table::new(&[
        ("batch", true),
        ("threads", true),
        ("mean ms", true),
        ("p50 ms", true),
        ("p90 ms", true),
        ("p99 ms", true),
        ("min ms", true),
        ("max ms", true),
        ("images/s", true),
    ]);
    for r in &p.rows {
        let l = &r.latency_ms;
        t.rows.push(vec![
            r.batch.to_string(),
            r.threads.to_string(),
            ms(l.mean),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.min),
            ms(l.max),
            crate::progress::rate_text(r.images_per_s),
        ]);
    }
    Some(t)
}

/// The profile's plan and notes, as sentences.
pub fn latency_notes(a: &Artifacts) -> Vec<String> {
    let Some(p) = a.profile.as_ref() else {
        return Vec::new();
    };
    let mut v = vec![format!(
        "ONNX Runtime {} ({}) on {}, {} cores; {} warm-up and {} timed runs per row.",
        p.ort_version,
        p.execution_provider,
        p.machine.cpu,
        p.machine.cores,
        p.plan.warmup,
        p.plan.runs
    )];
    v.extend(p.notes.iter().cloned());
    v
}

/// Parameters and multiply-adds as the model card and the profile give them.
pub fn cost_table(a: &Artifacts) -> Option<Table> {
    if a.trained.is_none() && a.profile.is_none() {
        return None;
    }
    let mut t = Table::new(&[
        ("source", false),
        ("parameters", true),
        ("MACs per image", true),
        ("notes", false),
    ]);
    if let Some(tr) = &a.trained {
        let c = &tr.card;
        let size = match (c.channels, c.layers) {
            (Some(ch), Some(l)) => format!(", width {ch}, {l} layers"),
            (Some(ch), None) => format!(", width {ch}"),
            (None, Some(l)) => format!(", {l} layers"),
            (None, None) => String::new(),
        };
        t.rows.push(vec![
            "model card (retrain/model.ron)".into(),
            thousands(c.params),
            thousands(c.macs),
            format!(
                "input {}×{}×{}, {} classes{size}; auxiliary head excluded",
                c.input.channels,
                c.input.size,
                c.input.size,
                c.classes.len()
            ),
        ]);
    }
    if let Some(p) = &a.profile {
        let m = &p.model;
        t.rows.push(vec![
            "profile (profile.json)".into(),
            m.params.map_or("—".into(), thousands),
            m.macs.map_or("—".into(), thousands),
            format!(
                "ONNX file {} bytes; parameters from the {}",
                thousands(m.file_bytes),
                m.params_from.as_deref().unwrap_or("model")
            ),
        ]);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget's sentence says the run's share of it, and retraining's images when
    /// pacing changed them.
    #[test]
    fn the_budget_sentence_says_paced_images() {
        let part = |ran: Option<u64>| super::super::BudgetPart {
            epochs: Some(3),
            images: Some(1000),
            planned_s: 90.0,
            actual_s: Some(95.0),
            ran_images: ran,
            ran_epochs: ran.map(|n| n.div_ceil(1000) as u32),
        };
        let summary = |ran: Option<u64>| super::super::BudgetSummary {
            total_s: 100.0,
            planned_s: 100.0,
            actual_s: Some(101.0),
            calibration_s: 1.0,
            search: None,
            retrain: Some(part(ran)),
            after: super::super::BudgetPart {
                epochs: None,
                images: None,
                planned_s: 5.0,
                actual_s: Some(5.0),
                ran_images: None,
                ran_epochs: None,
            },
        };
        let (t, text) = budget_table(&summary(Some(2900)));
        assert_eq!(t.rows.len(), 4);
        assert_eq!(
            text,
            "The run took 1m 41s of its 1m 40s budget (101.0%). Retraining was paced to the \
             time left: 3 epochs of 2,900 images in all, against the plan's 3 of 3,000."
        );
        let (_, text) = budget_table(&summary(Some(3900)));
        assert!(
            text.ends_with("4 epochs of 3,900 images in all, against the plan's 3 of 3,000."),
            "{text}"
        );
        for as_planned in [Some(3000), None] {
            let (_, text) = budget_table(&summary(as_planned));
            assert!(!text.contains("paced"), "{text}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.478), "0.48 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(245.0), "4m 5s");
        assert_eq!(duration(3723.4), "1h 2m 3s");
        assert_eq!(duration(f64::NAN), "—");
    }

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(pct(0.21875), "21.88%");
        assert_eq!(pct(1.0), "100.00%");
        assert_eq!(compact(6876), "6,876");
        assert_eq!(compact(3_349_342), "3.35 M");
        assert_eq!(compact(574_000_000), "574 M");
        assert_eq!(compact(128_896), "129 K");
        assert_eq!(
            when("2025-12-01T13:54:00.123456Z"),
            "2025-12-01 13:54:00 UTC"
        );
    }
}
