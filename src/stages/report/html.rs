//! `report.html`: one self-contained HTML5 page — inline CSS, inline SVG charts and cell
//! drawings, no script, no reference to anything outside the page (the only URL in it is
//! the SVG namespace). Every id in the page is unique: the sections' anchors and the cell
//! drawings' prefixed ids; the charts have none.

use std::fmt::Write as _;

use super::charts::{self, Bar, Bars, Heatmap, Legend, LineChart, Palette, Series, Style};
use super::facts::{self, Absence, Table, pct};
use super::{Artifacts, Summary, graph};
use crate::error::Result;
use crate::run::metrics::CurvePoint;
use crate::space::show;

/// Escapes text for HTML content, letting a NAS-Bench-201 string break between node
/// groups (`|+|`) and between the ops of a group (`~0|avg`), never inside an op's name.
fn breakable(s: &str) -> String {
    let e = esc(s);
    let mut o = String::with_capacity(e.len() + e.len() / 8);
    let mut chars = e.chars().peekable();
    while let Some(c) = chars.next() {
        o.push(c);
        let next_is_op = chars.peek().is_some_and(|n| n.is_ascii_alphabetic());
        if c == '+' || (c == '|' && next_is_op) {
            o.push_str("<wbr>");
        }
    }
    o
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
:root { --ink: #222; --muted: #666; --line: #ddd; --zebra: #f7f8fa; --accent: #1f77b4;
  --pass: #1a7f37; --pass-bg: #e6f4ea; --fail: #b42318; --fail-bg: #fdecea; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
p { margin: 6px 0 10px; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 13px; }
pre { background: var(--zebra); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
  overflow-x: auto; line-height: 1.4; }
.lede { color: var(--muted); margin-bottom: 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0 8px; }
.card { flex: 1 1 170px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 13px; }
.card .v { font-size: 24px; font-weight: 600; }
.card .d { color: var(--muted); font-size: 12px; }
.card.pass { border-color: var(--pass); background: var(--pass-bg); }
.card.pass .v { color: var(--pass); }
.card.fail { border-color: var(--fail); background: var(--fail-bg); }
.card.fail .v { color: var(--fail); }
nav.toc { border: 1px solid var(--line); border-radius: 8px; padding: 8px 16px; margin: 16px 0; }
nav.toc ol { margin: 4px 0; padding-left: 20px; columns: 2; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px;
  display: block; width: max-content; max-width: 100%; overflow-x: auto; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--zebra); font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td:not(.num) { overflow-wrap: break-word; }
table.facts th { background: none; font-weight: normal; color: var(--muted); }
.absent { color: var(--muted); font-style: italic; }
.verdict { display: inline-block; font-weight: 700; padding: 2px 10px; border-radius: 4px; }
.verdict.pass { color: var(--pass); background: var(--pass-bg); }
.verdict.fail { color: var(--fail); background: var(--fail-bg); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 12px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 13px; }
figure svg { max-width: 100%; height: auto; display: block; }
.heatmaps { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: flex-start; }
svg.graph { max-width: 100%; height: auto; }
.graphs figure { border: 1px solid var(--line); border-radius: 8px; padding: 8px; margin: 8px 0; overflow-x: auto; }
.meter { display: inline-block; height: 10px; background: var(--accent); border-radius: 2px; vertical-align: middle; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 13px; margin-top: 40px; border-top: 1px solid var(--line); padding-top: 8px; }
"#;

/// A small horizontal bar `fraction` (0–1) of full width, for table columns.
fn meter(fraction: f64) -> String {
    let w = if fraction.is_finite() {
        (fraction.clamp(0.0, 1.0) * 120.0).round()
    } else {
        0.0
    };
    format!("<span class=\"meter\" style=\"width:{w}px\"></span>")
}

fn absent(a: &Absence) -> String {
    let files: Vec<String> = a
        .files
        .iter()
        .map(|f| format!("<code>{}</code>", esc(f)))
        .collect();
    format!(
        "<p class=\"absent\">Not in this run: no {} — {}.</p>\n",
        files.join(" or "),
        esc(a.why)
    )
}

/// A table; `extra` adds a last column of raw HTML per row (meters).
fn table(t: &Table, extra: Option<(&str, &[String])>) -> String {
    let mut o = String::from("<table>\n<thead><tr>");
    for (h, &n) in t.head.iter().zip(&t.numeric) {
        let _ = write!(
            o,
            "<th{}>{}</th>",
            if n { " class=\"num\"" } else { "" },
            esc(h)
        );
    }
    if let Some((h, _)) = extra {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    o.push_str("</tr></thead>\n<tbody>\n");
    for (i, row) in t.rows.iter().enumerate() {
        o.push_str("<tr>");
        for (c, cell) in row.iter().enumerate() {
            let n = t.numeric.get(c).copied().unwrap_or(false);
            let _ = write!(
                o,
                "<td{}>{}</td>",
                if n { " class=\"num\"" } else { "" },
                breakable(cell)
            );
        }
        if let Some((_, cells)) = extra {
            let _ = write!(o, "<td>{}</td>", cells.get(i).map_or("", |s| s.as_str()));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody>\n</table>\n");
    o
}

/// A table, folded into a `<details>` when it has more rows than fit beside a chart.
fn long_table(t: &Table, what: &str) -> String {
    if t.rows.len() <= 12 {
        return table(t, None);
    }
    format!(
        "<details>\n<summary>{} ({} rows)</summary>\n{}</details>\n",
        esc(what),
        t.rows.len(),
        table(t, None)
    )
}

fn facts_table(rows: &[(&str, String)]) -> String {
    let mut o = String::from("<table class=\"facts\">\n<tbody>\n");
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    o.push_str("</tbody>\n</table>\n");
    o
}

fn figure(svg: &str, caption: &str) -> String {
    if caption.is_empty() {
        format!("<figure>\n{svg}\n</figure>\n")
    } else {
        format!(
            "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
            esc(caption)
        )
    }
}

fn card(class: &str, key: &str, value: &str, detail: &str) -> String {
    format!(
        "<div class=\"card{}\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"d\">{}</div></div>\n",
        if class.is_empty() {
            String::new()
        } else {
            format!(" {class}")
        },
        esc(key),
        esc(value),
        esc(detail)
    )
}

fn header(a: &Artifacts, s: &Summary) -> String {
    let h = &s.headline;
    let mut o = String::new();
    let _ = writeln!(o, "<header>\n<h1>Run report: {}</h1>", esc(&s.pipeline));
    let mut lede = vec![format!("pipeline “{}”", s.pipeline)];
    if let Some(v) = &s.nas_pipe_version {
        lede.push(format!("nas-pipe {v}"));
    }
    if let Some((start, end, _)) = facts::span(a) {
        lede.push(format!("stages ran from {start} to {end}"));
    }
    let _ = writeln!(o, "<p class=\"lede\">{}</p>", esc(&lede.join(" · ")));
    o.push_str("<div class=\"cards\">\n");
    let dash = "—".to_string();
    let images = a
        .evaluation
        .as_ref()
        .map(|e| {
            format!(
                "{} test images, {}, evaluated once",
                facts::thousands(e.images as u64),
                e.weights
            )
        })
        .unwrap_or_else(|| match (a.returned(), &a.trials) {
            (Some(_), Some(t)) if h.test_accuracy.is_some() => {
                format!("{} of the returned architecture", t.report)
            }
            _ => "not evaluated".into(),
        });
    o += &card(
        "",
        "Test accuracy",
        &h.test_accuracy.map_or(dash.clone(), pct),
        &images,
    );
    let (class, verdict, detail) = match (&a.validation, h.validation_passed) {
        (Some(v), Some(true)) => (
            "pass",
            "PASSED",
            format!("ONNX Runtime vs Candle, {} images", v.samples),
        ),
        (Some(v), _) => (
            "fail",
            "FAILED",
            format!("ONNX Runtime vs Candle, {} images", v.samples),
        ),
        (None, _) => ("", "—", "not validated".to_string()),
    };
    o += &card(class, "Validation", verdict, &detail);
    let lat = a.batch1_row().map_or("no batch-1 row".to_string(), |r| {
        format!(
            "{} thread{}, ONNX Runtime",
            r.threads,
            if r.threads == 1 { "" } else { "s" }
        )
    });
    o += &card(
        "",
        "Latency p50, batch 1",
        &h.latency_p50_ms_batch1
            .map_or(dash.clone(), |v| format!("{} ms", facts::ms(v))),
        match (&a.profile, h.latency_p50_ms_batch1) {
            (Some(_), _) => &lat,
            (None, Some(_)) => "the search's estimate for the returned architecture",
            (None, None) => "not profiled",
        },
    );
    let exact = |n: Option<u64>, unit: &str| match n {
        Some(n) if facts::compact(n) != facts::thousands(n) => {
            format!("{}{unit}", facts::thousands(n))
        }
        Some(_) => unit.trim_start().to_string(),
        None => String::new(),
    };
    o += &card(
        "",
        "Parameters",
        &h.params.map_or(dash.clone(), facts::compact),
        &exact(h.params, ""),
    );
    o += &card(
        "",
        "MACs",
        &h.macs.map_or(dash.clone(), facts::compact),
        &exact(h.macs, " per image"),
    );
    o.push_str("</div>\n</header>\n");
    o
}

fn toc() -> String {
    let mut o = String::from("<nav class=\"toc\">\n<strong>Contents</strong>\n<ol>\n");
    for (id, title) in facts::SECTIONS {
        let _ = writeln!(o, "<li><a href=\"#{id}\">{}</a></li>", esc(title));
    }
    o.push_str("</ol>\n</nav>\n");
    o
}

fn section(id: &str, body: &str) -> String {
    let title = facts::SECTIONS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(id, |(_, t)| t);
    format!(
        "<section id=\"{id}\">\n<h2>{}</h2>\n{body}</section>\n",
        esc(title)
    )
}

fn run(a: &Artifacts, s: &Summary) -> String {
    let mut o = facts_table(&facts::run_facts(a, s));
    match facts::stage_table(a) {
        Some(t) => {
            let lock = a.lock.as_ref().map(|l| &l.stages[..]).unwrap_or(&[]);
            let longest = lock.iter().map(|e| e.seconds).fold(0f64, f64::max);
            let meters: Vec<String> = lock
                .iter()
                .map(|e| {
                    if longest > 0.0 {
                        meter(e.seconds / longest)
                    } else {
                        String::new()
                    }
                })
                .collect();
            o.push_str("<h3>Stages</h3>\n");
            o += &table(&t, Some(("", &meters)));
            let total: f64 = lock.iter().map(|e| e.seconds).sum();
            let _ = writeln!(
                o,
                "<p>Sum of the stage times: {} (from <code>nas-pipe.lock</code>; a resumed stage counts the run that finished it).</p>",
                esc(&facts::duration(total))
            );
        }
        None => o += &absent(&facts::NO_LOCK),
    }
    if let Some(b) = &s.budget {
        let (t, text) = facts::budget_table(b);
        o.push_str("<h3>Budget: plan and actual</h3>\n");
        o += &table(&t, None);
        let _ = writeln!(o, "<p>{}</p>", esc(&text));
    }
    o
}

/// At most this many epoch-end guide lines per chart.
const GUIDES: usize = 12;

/// Every how many epochs a guide line is drawn.
fn guide_every(epochs: usize) -> usize {
    epochs.div_ceil(GUIDES).max(1)
}

/// The x axis's description for a chart over `epochs` epochs of steps.
fn step_desc(epochs: usize) -> String {
    match guide_every(epochs) {
        1 => "step (grey lines: epoch ends)".into(),
        k => {
            let suffix = match (k % 10, k % 100) {
                (_, 11..=13) => "th",
                (2, _) => "nd",
                (3, _) => "rd",
                _ => "th",
            };
            format!("step (grey lines: every {k}{suffix} epoch end)")
        }
    }
}

/// A loss (`acc` false) or accuracy chart, in percent on a 0–100 axis, of the search or the
/// retraining.
fn loss_or_accuracy_chart(
    title: String,
    x_desc: &str,
    y_desc: &str,
    series: Vec<Series>,
    guides: Vec<f64>,
    acc: bool,
) -> Result<String> {
    charts::line_chart(&LineChart {
        title,
        x_desc: x_desc.to_string(),
        y_desc: y_desc.into(),
        series,
        guides,
        y_range: acc.then_some((0.0, 100.0)),
        size: CHART,
        legend: if acc {
            Legend::LowerRight
        } else {
            Legend::UpperRight
        },
    })
}

/// The epoch ends that get a guide line.
fn guides(ends: &[f64]) -> Vec<f64> {
    let k = guide_every(ends.len());
    ends.iter().skip(k - 1).step_by(k).copied().collect()
}

/// Where each epoch's curve ends (its last step), when every epoch has a curve.
fn epoch_ends<'c>(curves: impl Iterator<Item = &'c [CurvePoint]>) -> Option<Vec<f64>> {
    curves.map(|c| c.last().map(|p| p.step as f64)).collect()
}

const CHART: (u32, u32) = (560, 330);

/// A multi-trial search: the search signal of every evaluation with the best so far, the
/// Pareto front over accuracy and the first cost objective, and the front's table.
fn trials(a: &Artifacts, t: &crate::run::trials::State) -> Result<String> {
    let mut o = String::new();
    if let Some(text) = facts::trials_text(a) {
        let _ = writeln!(o, "<p>{}</p>", breakable(&text));
    }
    let evaluated: Vec<&crate::run::trials::Record> =
        t.records.iter().filter(|r| r.evaluated()).collect();
    if evaluated.is_empty() {
        o.push_str("<p class=\"absent\">No architecture was evaluated yet.</p>\n");
        return Ok(o);
    }
    let mut best: Option<&crate::run::trials::Record> = None;
    let (mut best_line, mut report_line) = (Vec::new(), Vec::new());
    for (i, r) in evaluated.iter().enumerate() {
        if best.is_none_or(|b| r.reward > b.reward) {
            best = Some(r);
        }
        let x = (i + 1) as f64;
        if let Some(b) = best {
            best_line.push((x, 100.0 * b.accuracy.unwrap_or(0.0)));
            if let Some(rep) = b.report {
                report_line.push((x, 100.0 * rep));
            }
        }
    }
    let mut series = vec![
        Series {
            name: "each evaluation".into(),
            color: charts::TRAIN,
            style: Style::Markers,
            points: evaluated
                .iter()
                .enumerate()
                .map(|(i, r)| ((i + 1) as f64, 100.0 * r.accuracy.unwrap_or(0.0)))
                .collect(),
        },
        Series {
            name: "best so far".into(),
            color: charts::TEST,
            style: Style::Line,
            points: best_line,
        },
    ];
    if !report_line.is_empty() {
        series.push(Series {
            name: format!("best so far: {}", t.report),
            color: charts::LR,
            style: Style::Line,
            points: report_line,
        });
    }
    let y_range = data_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let best_chart = charts::line_chart(&LineChart {
        title: "Search: accuracy of each evaluation".into(),
        x_desc: "evaluation".into(),
        y_desc: "accuracy (%)".into(),
        series,
        guides: Vec::new(),
        y_range,
        size: (560, 320),
        legend: Legend::LowerRight,
    })?;
    let mut charts_html = figure(&best_chart, "");
    if let Some(f) = &a.front {
        let cost = f.objectives.get(1).cloned();
        let value = |r_lat: Option<f64>, params: u64, macs: u64| -> Option<f64> {
            match cost.as_deref() {
                Some("latency_ms") => r_lat,
                Some("macs") => Some(macs as f64 / 1e6),
                _ => Some(params as f64 / 1e3),
            }
        };
        let x_desc = match cost.as_deref() {
            Some("latency_ms") => "latency (ms)",
            Some("macs") => "MACs (millions)",
            _ => "parameters (thousands)",
        };
        let all: Vec<(f64, f64)> = evaluated
            .iter()
            .filter_map(|r| Some((value(r.latency_ms, r.params, r.macs)?, 100.0 * r.accuracy?)))
            .collect();
        let mut front: Vec<(f64, f64)> = f
            .points
            .iter()
            .filter_map(|p| Some((value(p.latency_ms, p.params, p.macs)?, 100.0 * p.accuracy)))
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        // The front of this plane alone: by x, each point more accurate than all before.
        let mut by_x = all.clone();
        by_x.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut plane = Vec::new();
        for p in by_x {
            if plane.last().is_none_or(|q: &(f64, f64)| p.1 > q.1) {
                plane.push(p);
            }
        }
        let y_range = data_range(all.iter().chain(&front).map(|p| p.1));
        let svg = charts::line_chart(&LineChart {
            title: format!("Pareto front over {}", f.objectives.join(", ")),
            x_desc: x_desc.into(),
            y_desc: "accuracy (%)".into(),
            series: vec![
                Series {
                    name: "evaluated".into(),
                    color: charts::TRAIN,
                    style: Style::Markers,
                    points: all,
                },
                Series {
                    name: "front in this plane".into(),
                    color: charts::TEST,
                    style: Style::Line,
                    points: plane,
                },
                Series {
                    name: format!("Pareto front ({})", f.objectives.join(", ")),
                    color: charts::TEST,
                    style: Style::Markers,
                    points: front,
                },
            ],
            guides: Vec::new(),
            y_range,
            size: (560, 320),
            legend: Legend::LowerRight,
        })?;
        charts_html += &figure(&svg, "");
    }
    let _ = writeln!(o, "<div class=\"charts\">\n{charts_html}</div>");
    if let Some(tb) = facts::front_table(a) {
        o += &table(&tb, None);
    }
    o += &workers(a)?;
    Ok(o)
}

/// A search on workers: the sentence and the timeline.
fn workers(a: &Artifacts) -> Result<String> {
    let (Some(text), Some(t)) = (facts::workers_text(a), a.timeline.as_ref()) else {
        return Ok(String::new());
    };
    let caption = if t.workers.len() > charts::TIMELINE_ROWS {
        format!(
            "The first {} of {} workers; failed trials in red.",
            charts::TIMELINE_ROWS,
            t.workers.len()
        )
    } else {
        "Failed trials in red.".to_string()
    };
    Ok(format!(
        "<p>{}</p>\n<div class=\"charts\">\n{}</div>\n",
        breakable(&text),
        figure(&charts::timeline(t)?, &caption)
    ))
}

/// The values' range with a margin of a tenth of it on each side (at least one unit).
fn data_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let pad = (0.1 * (hi - lo)).max(1.0);
    Some((lo - pad, hi + pad))
}

fn search(a: &Artifacts) -> Result<String> {
    if let Some(t) = &a.trials {
        return trials(a, t);
    }
    let Some(s) = &a.search else {
        return Ok(absent(&facts::NO_SEARCH));
    };
    let m = &s.metrics;
    let mut o = String::new();
    if m.is_empty() {
        o.push_str("<p class=\"absent\">The search state records no finished epoch.</p>\n");
        return Ok(o);
    }
    let ends = epoch_ends(m.iter().map(|e| e.curve.as_slice()));
    let (x_desc, xs, curve) = match &ends {
        Some(e) => (step_desc(e.len()), e.clone(), true),
        None => (
            "epoch".to_string(),
            (1..=m.len()).map(|e| e as f64).collect(),
            false,
        ),
    };
    let mut charts_html = String::new();
    for (what, y_desc, acc) in [("Loss", "loss", false), ("Accuracy", "accuracy (%)", true)] {
        let scale = if acc { 100.0 } else { 1.0 };
        let pick = |p: &CurvePoint| if acc { p.acc } else { p.loss };
        let mut series = Vec::new();
        if curve {
            let train: Vec<(f64, f64)> = m
                .iter()
                .flat_map(|e| e.curve.iter())
                .map(|p| (p.step as f64, scale * pick(p)))
                .collect();
            let val: Vec<(f64, f64)> = m
                .iter()
                .flat_map(|e| e.val_curve.iter())
                .map(|p| (p.step as f64, scale * pick(p)))
                .collect();
            series.push(Series {
                name: "train".into(),
                color: charts::TRAIN,
                style: Style::Line,
                points: train,
            });
            if !val.is_empty() {
                series.push(Series {
                    name: "validation".into(),
                    color: charts::TEST,
                    style: Style::Line,
                    points: val,
                });
            }
        }
        let style = if curve {
            Style::Markers
        } else {
            Style::LineMarkers
        };
        series.push(Series {
            name: "train, epoch mean".into(),
            color: charts::TRAIN,
            style,
            points: xs
                .iter()
                .zip(m)
                .map(|(&x, e)| (x, scale * if acc { e.train_acc } else { e.train_loss }))
                .collect(),
        });
        series.push(Series {
            name: "validation, epoch mean".into(),
            color: charts::TEST,
            style,
            points: xs
                .iter()
                .zip(m)
                .map(|(&x, e)| (x, scale * if acc { e.val_acc } else { e.val_loss }))
                .collect(),
        });
        let guides = if curve { guides(&xs) } else { Vec::new() };
        let svg = loss_or_accuracy_chart(
            format!("Search: {}", what.to_lowercase()),
            &x_desc,
            y_desc,
            series,
            guides,
            acc,
        )?;
        charts_html += &figure(&svg, "");
    }
    let _ = writeln!(
        o,
        "<p>The weight-sharing network over {} epoch{}: lines are the mean of the steps between two points, dots the epoch means.</p>",
        m.len(),
        if m.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(o, "<div class=\"charts\">\n{charts_html}</div>");
    if let Some(t) = facts::search_table(a) {
        o += &long_table(&t, "Per-epoch figures");
    }
    Ok(o)
}

/// Pixels for labels of these texts at the heatmaps' 11 px font, with the gap the heatmap
/// puts after each.
fn label_width(labels: &[String]) -> u32 {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u32;
    (longest * 7 + 24).clamp(30, 250)
}

fn op_weights(a: &Artifacts) -> Result<String> {
    if a.trials.is_some() {
        return Ok(format!(
            "<p>{}</p>\n",
            esc(facts::TRIALS_HAVE_NO_OP_WEIGHTS)
        ));
    }
    let Some(s) = &a.search else {
        return Ok(absent(&facts::NO_HISTORY));
    };
    let h = &s.history;
    let Some(first) = h.first() else {
        return Ok("<p class=\"absent\">The search state records no op weights.</p>\n".into());
    };
    let space = a.trained.as_ref().map(|t| &t.space);
    let epochs: Vec<String> = h.iter().map(|x| (x.epoch + 1).to_string()).collect();
    let cell_w = if epochs.len() <= 10 {
        26
    } else {
        (260 / epochs.len() as u32).max(5)
    };
    let mut o = String::from(
        "<p>The softmax of each edge's architecture weights after every epoch: one heatmap per edge, a row per candidate op, a column per epoch. ",
    );
    if a.trained.is_some() {
        o.push_str(
            "Red outlines mark the op the retrained architecture keeps on that edge (in the last column).",
        );
    } else {
        o.push_str("Without <code>retrain/model.ron</code> the ops are numbered, not named.");
    }
    o.push_str("</p>\n");
    for (ci, (name, w0)) in first.cells.iter().enumerate() {
        let k = w0.first().map_or(0, Vec::len);
        let ops = facts::candidate_names(space, Some(name), 0, k);
        let values = |e: usize, c: usize| h.iter().map(move |snap| snap.cells[ci].1[e][c] as f64);
        let (lo, hi) = (0..w0.len())
            .flat_map(|e| (0..k).flat_map(move |c| values(e, c)))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, u), v| {
                (l.min(v), u.max(v))
            });
        // The kept (edge, candidate row) pairs of this cell type.
        let kept: Vec<(usize, usize)> = a
            .trained
            .as_ref()
            .and_then(|t| {
                let cj = t.space.cells.iter().position(|c| &c.name == name)?;
                let cell = &t.space.cells[cj];
                let chosen = t.arch.cells.get(cj)?.as_ref()?;
                Some(
                    chosen
                        .iter()
                        .filter_map(|(e, cand)| {
                            Some((*e, cell.candidates.iter().position(|x| x == cand)?))
                        })
                        .collect(),
                )
            })
            .unwrap_or_default();
        let _ = writeln!(o, "<h3>Cell “{}”</h3>", esc(name));
        let _ = writeln!(
            o,
            "<p>{} edges × {k} candidates; uniform weight 1/{k} = {:.3}; one colour scale for all edges of this cell type.</p>",
            w0.len(),
            1.0 / k.max(1) as f64
        );
        let bar = charts::colour_bar(Palette::Viridis, lo, hi, "softmax weight")?;
        o += &figure(&bar, "");
        o.push_str("<div class=\"heatmaps\">\n");
        for e in 0..w0.len() {
            let svg = charts::heatmap(&Heatmap {
                title: facts::edge_label(space, name, e),
                rows: ops.clone(),
                cols: epochs.clone(),
                values: (0..k).map(|c| values(e, c).collect()).collect(),
                range: (lo, hi),
                palette: Palette::Viridis,
                annotations: Vec::new(),
                outlined: kept
                    .iter()
                    .filter(|(ke, _)| *ke == e)
                    .map(|&(_, row)| (row, epochs.len() - 1))
                    .collect(),
                x_desc: "epoch".into(),
                y_desc: String::new(),
                cell: (cell_w, 16),
                label_width: label_width(&ops),
            })?;
            o += &figure(&svg, "");
        }
        o.push_str("</div>\n");
    }
    if !first.layers.is_empty() {
        o.push_str("<h3>Searchable layers</h3>\n");
        let all = h
            .iter()
            .flat_map(|x| x.layers.iter().flatten().map(|&v| v as f64));
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, u), v| {
            (l.min(v), u.max(v))
        });
        o += &figure(
            &charts::colour_bar(Palette::Viridis, lo, hi, "softmax weight")?,
            "",
        );
        o.push_str("<div class=\"heatmaps\">\n");
        for (l, w) in first.layers.iter().enumerate() {
            let ops = facts::candidate_names(space, None, l, w.len());
            let kept_row = a.trained.as_ref().and_then(|t| {
                let chosen = t.arch.slots.get(l)?;
                t.space
                    .slots
                    .get(l)?
                    .candidates
                    .iter()
                    .position(|c| c == chosen)
            });
            let svg = charts::heatmap(&Heatmap {
                title: format!("layer {l}"),
                rows: ops.clone(),
                cols: epochs.clone(),
                values: (0..w.len())
                    .map(|c| h.iter().map(|snap| snap.layers[l][c] as f64).collect())
                    .collect(),
                range: (lo, hi),
                palette: Palette::Viridis,
                annotations: Vec::new(),
                outlined: kept_row
                    .map(|r| vec![(r, epochs.len() - 1)])
                    .unwrap_or_default(),
                x_desc: "epoch".into(),
                y_desc: String::new(),
                cell: (cell_w, 16),
                label_width: label_width(&ops),
            })?;
            o += &figure(&svg, "");
        }
        o.push_str("</div>\n");
    }
    Ok(o)
}

fn architecture(a: &Artifacts) -> String {
    let genotype = a
        .genotype
        .clone()
        .or_else(|| a.trained.as_ref().map(|t| t.genotype.to_ron()));
    if genotype.is_none() && a.trained.is_none() {
        return absent(&facts::NO_ARCH);
    }
    let mut o = String::new();
    match (&a.trained, &a.searched) {
        (Some(t), _) => {
            o += &drawings(&t.space, &t.arch, "retrained network");
        }
        (None, Some((space, arch))) => {
            o.push_str(
                "<p>The architecture the search returned, in the space it searched \
                 (<code>search/space.ron</code>).</p>\n",
            );
            o += &drawings(space, arch, "searched network");
        }
        (None, None) => o += &absent(&facts::NO_GRAPHS),
    }
    if let Some(g) = genotype {
        let source = if a.genotype.is_some() {
            "genotype.ron"
        } else {
            crate::run::dir::retrained::GENOTYPE
        };
        let _ = writeln!(
            o,
            "<h3>Genotype</h3>\n<p>As written to <code>{source}</code>.</p>\n<pre>{}</pre>",
            esc(g.trim_end())
        );
    }
    o
}

/// Drawings of the cells `arch` uses in `space` (a chain network: its layer list), and the
/// layers and parameters of the `what` network.
fn drawings(
    space: &crate::space::Space,
    arch: &crate::space::genotype::Architecture,
    what: &str,
) -> String {
    let mut o = String::new();
    let cells: Vec<usize> = (0..space.cells.len())
        .filter(|&c| arch.cells[c].is_some())
        .collect();
    if cells.is_empty() {
        o.push_str("<p>A chain network: one op per searchable layer.</p>\n");
        let _ = writeln!(o, "<pre>{}</pre>", esc(&show::text_arch(space, arch)));
    } else {
        o.push_str("<div class=\"graphs\">\n");
        for c in cells {
            let cell = &space.cells[c];
            let _ = writeln!(o, "<h3>Cell “{}”</h3>", esc(&cell.name));
            let outs: Vec<String> = cell.output_states().iter().map(|s| s.to_string()).collect();
            let caption = format!(
                "{} input state{} (in 0{}), {} intermediate node{}; the output {} {}{}.",
                cell.inputs,
                if cell.inputs == 1 { "" } else { "s" },
                if cell.inputs > 1 {
                    format!("–{}", cell.inputs - 1)
                } else {
                    String::new()
                },
                cell.nodes,
                if cell.nodes == 1 { "" } else { "s" },
                if outs.len() > 1 {
                    "concatenates nodes"
                } else {
                    "is node"
                },
                outs.join(", "),
                if cell.reduction {
                    "; a reduction cell: edges from the inputs have stride 2"
                } else {
                    ""
                }
            );
            let drawn = show::cell_dot(space, arch, c)
                .ok_or_else(|| "the architecture does not use this cell".to_string())
                .and_then(|dot| graph::svg(&dot, &format!("cell{c}")).map_err(|e| e.to_string()));
            match drawn {
                Ok(svg) => o += &figure(&svg, &caption),
                Err(e) => {
                    let _ = writeln!(o, "<p class=\"absent\">No drawing: {}.</p>", esc(&e));
                }
            }
        }
        o.push_str("</div>\n");
        let _ = writeln!(
            o,
            "<details>\n<summary>Layers and parameters of the {what}</summary>\n<pre>{}</pre>\n</details>",
            esc(&show::text_arch(space, arch))
        );
    }
    o
}

fn retrain(a: &Artifacts, s: &Summary) -> Result<String> {
    let Some(m) = &a.metrics else {
        return Ok(absent(&facts::NO_RETRAIN));
    };
    if m.is_empty() {
        return Ok("<p class=\"absent\">The retraining records no finished epoch.</p>\n".into());
    }
    let ends = epoch_ends(m.iter().map(|e| e.curve.as_slice()));
    let (x_desc, xs, starts, curve) = match &ends {
        Some(e) => {
            // An epoch's first step is the step after the previous epoch's last.
            let starts: Vec<f64> = std::iter::once(1.0)
                .chain(e.iter().map(|x| x + 1.0))
                .take(e.len())
                .collect();
            (step_desc(e.len()), e.clone(), starts, true)
        }
        None => {
            let xs: Vec<f64> = (1..=m.len()).map(|e| e as f64).collect();
            let starts = (0..m.len()).map(|e| e as f64).collect();
            ("epoch".to_string(), xs, starts, false)
        }
    };
    let mut charts_html = String::new();
    for (what, y_desc, acc) in [("loss", "loss", false), ("accuracy", "accuracy (%)", true)] {
        let scale = if acc { 100.0 } else { 1.0 };
        let mut series = Vec::new();
        if curve {
            series.push(Series {
                name: "train".into(),
                color: charts::TRAIN,
                style: Style::Line,
                points: m
                    .iter()
                    .flat_map(|e| e.curve.iter())
                    .map(|p| (p.step as f64, scale * if acc { p.acc } else { p.loss }))
                    .collect(),
            });
        }
        series.push(Series {
            name: "train, epoch mean".into(),
            color: charts::TRAIN,
            style: if curve {
                Style::Markers
            } else {
                Style::LineMarkers
            },
            points: xs
                .iter()
                .zip(m)
                .map(|(&x, e)| (x, scale * if acc { e.train_acc } else { e.train_loss }))
                .collect(),
        });
        let test: Vec<(f64, f64)> = xs
            .iter()
            .zip(m)
            .filter_map(|(&x, e)| Some((x, scale * if acc { e.val_acc? } else { e.val_loss? })))
            .collect();
        if !test.is_empty() {
            series.push(Series {
                name: "validation (evaluated epochs)".into(),
                color: charts::TEST,
                style: Style::LineMarkers,
                points: test,
            });
        }
        let guides = if curve { guides(&xs) } else { Vec::new() };
        let svg = loss_or_accuracy_chart(
            format!("Retraining: {what}"),
            &x_desc,
            y_desc,
            series,
            guides,
            acc,
        )?;
        charts_html += &figure(&svg, "");
    }
    let lr: Vec<(f64, f64)> = m
        .iter()
        .enumerate()
        .flat_map(|(i, e)| [(starts[i], e.lr.0), (xs[i], e.lr.1)])
        .collect();
    let svg = charts::line_chart(&LineChart {
        title: "Retraining: learning rate".into(),
        x_desc: x_desc.to_string(),
        y_desc: "learning rate".into(),
        series: vec![Series {
            name: "first and last step of each epoch".into(),
            color: charts::LR,
            style: Style::LineMarkers,
            points: lr,
        }],
        guides: if curve { guides(&xs) } else { Vec::new() },
        y_range: None,
        size: CHART,
        legend: Legend::UpperRight,
    })?;
    charts_html += &figure(&svg, "");
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<p>The final network trained from scratch over {} epoch{}.{}</p>",
        m.len(),
        if m.len() == 1 { "" } else { "s" },
        match s.retrain.as_ref().and_then(|r| r.best_val) {
            Some(b) => format!(" {}", facts::selection(b, html_code)),
            None => String::new(),
        }
    );
    let _ = writeln!(o, "<div class=\"charts\">\n{charts_html}</div>");
    if let Some(t) = facts::retrain_table(a) {
        o += &long_table(&t, "Per-epoch figures");
    }
    Ok(o)
}

/// A file name as HTML code, escaped.
fn html_code(s: &str) -> String {
    format!("<code>{}</code>", esc(s))
}

fn evaluation(a: &Artifacts, s: &Summary) -> Result<String> {
    let (Some(e), Some(es)) = (&a.evaluation, &s.evaluation) else {
        return Ok(absent(&facts::NO_EVALUATION));
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<p>{}: accuracy <strong>{}</strong>, loss {}.</p>",
        facts::test_once(&e.weights, e.images, html_code),
        pct(e.accuracy),
        facts::num(e.loss)
    );
    let n = e.classes.len();
    let max = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let side = if n <= 10 {
        54
    } else {
        (600 / n.max(1) as u32).max(8)
    };
    let svg = charts::heatmap(&Heatmap {
        title: "Confusion matrix".into(),
        rows: e.classes.clone(),
        cols: e.classes.clone(),
        values: e
            .confusion
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect(),
        range: (0.0, max.max(1) as f64),
        palette: Palette::Blues,
        annotations: if n <= 20 {
            e.confusion
                .iter()
                .map(|r| r.iter().map(|v| v.to_string()).collect())
                .collect()
        } else {
            Vec::new()
        },
        outlined: Vec::new(),
        x_desc: "predicted class".into(),
        y_desc: "true class".into(),
        cell: (side, (side * 2 / 3).max(8)),
        label_width: label_width(&e.classes),
    })?;
    o.push_str("<div class=\"charts\">\n");
    o += &figure(
        &svg,
        "Rows: true class; columns: predicted class; counts of test images.",
    );
    if let Some(t) = facts::class_table(s) {
        let meters: Vec<String> = es.per_class.iter().map(|c| meter(c.accuracy)).collect();
        let _ = writeln!(o, "<div>\n{}</div>", table(&t, Some(("", &meters))));
    }
    o.push_str("</div>\n");
    Ok(o)
}

fn validation(a: &Artifacts) -> String {
    let Some(v) = &a.validation else {
        return absent(&facts::NO_VALIDATION);
    };
    let mut o = String::new();
    let file = |p: &str| {
        std::path::Path::new(p)
            .file_name()
            .map_or(p.to_string(), |f| f.to_string_lossy().into_owned())
    };
    let _ = writeln!(
        o,
        "<p><span class=\"verdict {}\">{}</span> The exported <code>{}</code> in ONNX Runtime {} against the Candle model (<code>{}</code>, evaluation mode) on the first {} test images.</p>",
        if v.passed { "pass" } else { "fail" },
        if v.passed { "PASSED" } else { "FAILED" },
        esc(&file(&v.model)),
        esc(&v.ort_version),
        esc(&file(&v.weights)),
        v.samples
    );
    if let Some(t) = facts::validation_table(a) {
        o += &table(&t, None);
    }
    o
}

fn latency(a: &Artifacts) -> Result<String> {
    let Some(p) = &a.profile else {
        return Ok(absent(&facts::NO_PROFILE));
    };
    let mut o = String::new();
    for n in facts::latency_notes(a) {
        let _ = writeln!(o, "<p>{}</p>", esc(&n));
    }
    if let Some(t) = facts::latency_table(a) {
        o += &table(&t, None);
    }
    if p.rows.is_empty() {
        return Ok(o);
    }
    let label = |r: &crate::run::profile::Row| format!("b{} · t{}", r.batch, r.threads);
    let lat = charts::bars(&Bars {
        title: "Latency per run".into(),
        x_desc: "batch size · threads".into(),
        y_desc: "ms".into(),
        name: "p50".into(),
        color: charts::TRAIN,
        bars: p
            .rows
            .iter()
            .map(|r| Bar {
                label: label(r),
                value: r.latency_ms.p50,
                marks: vec![
                    ("p90".into(), r.latency_ms.p90),
                    ("p99".into(), r.latency_ms.p99),
                ],
            })
            .collect(),
        mark_colors: vec![charts::TEST, charts::TAIL],
        size: CHART,
    })?;
    let thr = charts::bars(&Bars {
        title: "Throughput".into(),
        x_desc: "batch size · threads".into(),
        y_desc: "images/s at the mean latency".into(),
        name: String::new(),
        color: charts::LR,
        bars: p
            .rows
            .iter()
            .map(|r| Bar {
                label: label(r),
                value: r.images_per_s,
                marks: Vec::new(),
            })
            .collect(),
        mark_colors: Vec::new(),
        size: CHART,
    })?;
    let _ = writeln!(
        o,
        "<div class=\"charts\">\n{}{}</div>",
        figure(
            &lat,
            "Bars: median latency of one run; marks: 90th and 99th percentiles."
        ),
        figure(&thr, "")
    );
    Ok(o)
}

fn cost(a: &Artifacts) -> String {
    match facts::cost_table(a) {
        Some(t) => {
            let mut o = String::from(
                "<p>Parameters count every trainable tensor (batch-norm affine weights included); multiply-adds count convolutions and linear layers, per image.</p>\n",
            );
            o += &table(&t, None);
            o
        }
        None => absent(&facts::NO_COST),
    }
}

fn spec(a: &Artifacts) -> String {
    match &a.pipeline {
        Some(p) => format!(
            "<p>The pipeline as the run resolved it, every default written out (<code>pipeline.ron</code>).</p>\n<details>\n<summary>pipeline.ron</summary>\n<pre>{}</pre>\n</details>\n",
            esc(p.text.trim_end())
        ),
        None => absent(&facts::NO_SPEC),
    }
}

/// The whole page.
pub fn render(a: &Artifacts, s: &Summary) -> Result<String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>nas-pipe report: {}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&s.pipeline)
    );
    o += &header(a, s);
    o += &toc();
    o += &section("run", &run(a, s));
    o += &section("search", &search(a)?);
    o += &section("op-weights", &op_weights(a)?);
    o += &section("architecture", &architecture(a));
    o += &section("retrain", &retrain(a, s)?);
    o += &section("evaluation", &evaluation(a, s)?);
    o += &section("validation", &validation(a));
    o += &section("latency", &latency(a)?);
    o += &section("cost", &cost(a));
    o += &section("spec", &spec(a));
    let _ = write!(
        o,
        "<footer>Rendered by nas-pipe {} from the artifacts of the run folder; <code>report.md</code> and <code>summary.json</code> beside this file hold the same facts. Times come from <code>nas-pipe.lock</code>.</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok(o)
}
