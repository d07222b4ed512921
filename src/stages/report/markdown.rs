//! `report.md`: the report's facts as Markdown (GitHub-flavoured tables), for a terminal or
//! a code host. No charts: it points to `report.html` for them.

use std::fmt::Write as _;

use super::facts::{self, Absence, Table, pct};
use super::{Artifacts, Summary};

/// A table cell: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

fn table(t: &Table) -> String {
    let mut o = String::new();
    let head: Vec<String> = t.head.iter().map(|h| cell(h)).collect();
    let _ = writeln!(o, "| {} |", head.join(" | "));
    let rule: Vec<&str> = t
        .numeric
        .iter()
        .map(|&n| if n { "---:" } else { "---" })
        .collect();
    let _ = writeln!(o, "|{}|", rule.join("|"));
    for r in &t.rows {
        let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    o.push('\n');
    o
}

fn absent(a: &Absence) -> String {
    let files: Vec<String> = a.files.iter().map(|f| format!("`{f}`")).collect();
    format!(
        "_Not in this run: no {} — {}._\n\n",
        files.join(" or "),
        a.why
    )
}

fn heading(o: &mut String, id: &str) {
    let title = facts::SECTIONS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(id, |(_, t)| t);
    let _ = writeln!(o, "## {title}\n");
}

/// Text in a fenced block that its own backticks cannot end.
fn fenced(o: &mut String, lang: &str, text: &str) {
    let mut fence = "```".to_string();
    while text.contains(&fence) {
        fence.push('`');
    }
    let _ = writeln!(o, "{fence}{lang}\n{}\n{fence}\n", text.trim_end());
}

/// A file name as Markdown code.
fn md_code(s: &str) -> String {
    format!("`{s}`")
}

/// The whole document.
pub fn render(a: &Artifacts, s: &Summary) -> String {
    let mut o = String::new();
    let h = &s.headline;
    let _ = writeln!(o, "# Run report: {}\n", s.pipeline);
    let dash = || "—".to_string();
    let verdict = match h.validation_passed {
        Some(true) => "**passed**".to_string(),
        Some(false) => "**FAILED**".to_string(),
        None => dash(),
    };
    let _ = writeln!(
        o,
        "Charts (learning curves, op-weight heatmaps, cell graphs, confusion matrix, latency) are in \
         [report.html](report.html); `summary.json` has these numbers for scripts.\n"
    );
    let rows = [
        ("test accuracy", h.test_accuracy.map_or_else(dash, pct)),
        ("validation", verdict),
        (
            "latency p50, batch 1",
            h.latency_p50_ms_batch1
                .map_or_else(dash, |v| format!("{} ms", facts::ms(v))),
        ),
        ("parameters", h.params.map_or_else(dash, facts::thousands)),
        ("MACs per image", h.macs.map_or_else(dash, facts::thousands)),
    ];
    let mut t = Table {
        head: vec!["headline", "value"],
        rows: Vec::new(),
        numeric: vec![false, true],
    };
    t.rows = rows.into_iter().map(|(k, v)| vec![k.into(), v]).collect();
    o += &table(&t);

    heading(&mut o, "run");
    let mut f = Table {
        head: vec!["fact", "value"],
        rows: Vec::new(),
        numeric: vec![false, false],
    };
    f.rows = facts::run_facts(a, s)
        .into_iter()
        .map(|(k, v)| vec![k.to_string(), v])
        .collect();
    o += &table(&f);
    match facts::stage_table(a) {
        Some(t) => {
            o += &table(&t);
            let total: f64 = a
                .lock
                .as_ref()
                .map_or(0.0, |l| l.stages.iter().map(|e| e.seconds).sum());
            let _ = writeln!(
                o,
                "Sum of the stage times: {} (from `nas-pipe.lock`).\n",
                facts::duration(total)
            );
        }
        None => o += &absent(&facts::NO_LOCK),
    }
    if let Some(b) = &s.budget {
        let (t, text) = facts::budget_table(b);
        o.push_str("**Budget: plan and actual**\n\n");
        o += &table(&t);
        let _ = writeln!(o, "{text}\n");
    }

    heading(&mut o, "search");
    if let Some(text) = facts::trials_text(a) {
        let _ = writeln!(o, "{text}\n");
        if let Some(t) = facts::front_table(a) {
            o.push_str("Pareto front:\n\n");
            o += &table(&t);
        }
        if let Some(text) = facts::workers_text(a) {
            let _ = writeln!(o, "{text}\n");
        }
    } else {
        match facts::search_table(a) {
            Some(t) if !t.rows.is_empty() => o += &table(&t),
            Some(_) => o.push_str("_The search state records no finished epoch._\n\n"),
            None => o += &absent(&facts::NO_SEARCH),
        }
    }
    heading(&mut o, "op-weights");
    match &a.search {
        _ if a.trials.is_some() => {
            let _ = writeln!(o, "{}\n", facts::TRIALS_HAVE_NO_OP_WEIGHTS);
        }
        Some(st) if !st.history.is_empty() => {
            let _ = writeln!(
                o,
                "Recorded after each of {} epochs; see the heatmaps in [report.html](report.html#op-weights).\n",
                st.history.len()
            );
        }
        Some(_) => o.push_str("_The search state records no op weights._\n\n"),
        None => o += &absent(&facts::NO_HISTORY),
    }

    heading(&mut o, "architecture");
    let genotype = a
        .genotype
        .clone()
        .or_else(|| a.trained.as_ref().map(|t| t.genotype.to_ron()));
    match (&genotype, &a.trained) {
        (None, None) => o += &absent(&facts::NO_ARCH),
        _ => {
            if let Some(g) = &genotype {
                fenced(&mut o, "ron", g);
            }
            if let Some(t) = &a.trained {
                o.push_str("The retrained network, layer by layer:\n\n");
                fenced(
                    &mut o,
                    "text",
                    &crate::space::show::text_arch(&t.space, &t.arch),
                );
            }
        }
    }

    heading(&mut o, "retrain");
    match facts::retrain_table(a) {
        Some(t) if !t.rows.is_empty() => {
            o += &table(&t);
            if let Some(b) = s.retrain.as_ref().and_then(|r| r.best_val) {
                let _ = writeln!(o, "{}\n", facts::selection(b, md_code));
            }
        }
        Some(_) => o.push_str("_The retraining records no finished epoch._\n\n"),
        None => o += &absent(&facts::NO_RETRAIN),
    }

    heading(&mut o, "evaluation");
    match (&a.evaluation, facts::class_table(s)) {
        (Some(e), Some(t)) => {
            let _ = writeln!(
                o,
                "{}: accuracy **{}**, loss {}.\n",
                facts::test_once(&e.weights, e.images, md_code),
                pct(e.accuracy),
                facts::num(e.loss)
            );
            o += &table(&t);
            o.push_str("Confusion matrix (rows: true class, columns: predicted class):\n\n");
            let mut head = vec!["true \\ predicted".to_string()];
            head.extend(e.classes.iter().map(|c| cell(c)));
            let _ = writeln!(o, "| {} |", head.join(" | "));
            let _ = writeln!(o, "|---|{}|", vec!["---:"; e.classes.len()].join("|"));
            for (k, row) in e.confusion.iter().enumerate() {
                let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                let _ = writeln!(o, "| {} | {} |", cell(&e.classes[k]), cells.join(" | "));
            }
            o.push('\n');
        }
        _ => o += &absent(&facts::NO_EVALUATION),
    }

    heading(&mut o, "validation");
    match facts::validation_table(a) {
        Some(t) => o += &table(&t),
        None => o += &absent(&facts::NO_VALIDATION),
    }

    heading(&mut o, "latency");
    match facts::latency_table(a) {
        Some(t) => {
            for n in facts::latency_notes(a) {
                let _ = writeln!(o, "{n}\n");
            }
            o += &table(&t);
        }
        None => o += &absent(&facts::NO_PROFILE),
    }

    heading(&mut o, "cost");
    match facts::cost_table(a) {
        Some(t) => o += &table(&t),
        None => o += &absent(&facts::NO_COST),
    }

    heading(&mut o, "spec");
    match &a.pipeline {
        Some(p) => {
            o.push_str("<details>\n<summary>pipeline.ron</summary>\n\n");
            fenced(&mut o, "ron", &p.text);
            o.push_str("</details>\n");
        }
        None => o += &absent(&facts::NO_SPEC),
    }
    o
}
