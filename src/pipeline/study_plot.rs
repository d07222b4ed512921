//! `nas-pipe study`'s curves, drawn with the report's charts: per pipeline the best-so-far
//! search signal and report signal against evaluations, mean ± standard error over seeds.

use crate::error::Result;
use crate::stages::search::study::Study;

/// Height of one chart; the SVG stacks the search-signal chart over the report-signal one.
const CHART: (u32, u32) = (640, 400);

/// The studies' anytime curves as one SVG of two charts: per pipeline, the mean over seeds
/// of the best-so-far architecture's search signal (top) and report signal (bottom) after
/// each evaluation, each in a band of ± one standard error.
pub fn curves_svg(studies: &[(Study, std::path::PathBuf)]) -> Result<String> {
    let first = studies.first().map(|(s, _)| s);
    let column = |f: fn(&Study) -> &str, default: &'static str| first.map_or(default, f);
    let search = chart(
        studies,
        |s| (&s.search_curve, &s.search_curve_se),
        format!(
            "{} of the best so far (%)",
            column(|s| s.search_column.as_str(), "search")
        ),
    )?;
    let report = chart(
        studies,
        |s| (&s.curve, &s.curve_se),
        format!(
            "{} of the best by {} (%)",
            column(|s| s.report_column.as_str(), "report"),
            column(|s| s.search_column.as_str(), "search")
        ),
    )?;
    Ok(stack(&[search, report]))
}

/// One chart: a line per study and its ± s.e. band.
fn chart(
    studies: &[(Study, std::path::PathBuf)],
    curve: fn(&Study) -> (&Vec<f64>, &Vec<f64>),
    y_desc: String,
) -> Result<String> {
    use crate::stages::report::charts::{self, Legend, LineChart, Series, Style};
    const COLOURS: [plotters::style::RGBColor; 5] = [
        charts::TRAIN,
        charts::TEST,
        charts::LR,
        charts::TAIL,
        plotters::style::RGBColor(148, 103, 189),
    ];
    let mut series = Vec::new();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, (s, _)) in studies.iter().enumerate() {
        let (mean, se) = curve(s);
        let color = COLOURS[i % COLOURS.len()];
        let x = |k: usize| (k + 1) as f64;
        let lower = mean
            .iter()
            .zip(se)
            .enumerate()
            .map(|(k, (m, e))| (x(k), m - e));
        let upper = mean
            .iter()
            .zip(se)
            .enumerate()
            .map(|(k, (m, e))| (x(k), m + e));
        let band: Vec<(f64, f64)> = lower.chain(upper.rev()).collect();
        for &(_, y) in band.iter().filter(|p| p.1.is_finite()) {
            lo = lo.min(y);
            hi = hi.max(y);
        }
        series.push(Series {
            name: String::new(),
            color,
            style: Style::Area,
            points: band,
        });
        series.push(Series {
            name: format!("{} ({})", s.pipeline, s.strategy),
            color,
            style: Style::Line,
            points: mean.iter().enumerate().map(|(k, &v)| (x(k), v)).collect(),
        });
    }
    // The first evaluations (random draws, far below the rest) would flatten the curves:
    // the range starts from the curves' values after a tenth of the budget.
    let skip = studies
        .iter()
        .map(|(s, _)| curve(s).0.len() / 10)
        .min()
        .unwrap_or(0);
    let late = studies
        .iter()
        .flat_map(|(s, _)| curve(s).0.iter().skip(skip))
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, |a, &v| a.min(v));
    let lo = if late.is_finite() { late.max(lo) } else { lo };
    let pad = (0.05 * (hi - lo)).max(0.1);
    // Points below the range are drawn on its floor (the chart does not clip).
    for s in &mut series {
        for p in &mut s.points {
            p.1 = p.1.max(lo - pad);
        }
    }
    charts::line_chart(&LineChart {
        title: format!(
            "Best so far, mean ± s.e. over {} seeds",
            studies.first().map_or(0, |(s, _)| s.seeds.len())
        ),
        x_desc: "evaluations".into(),
        y_desc,
        series,
        guides: Vec::new(),
        y_range: lo.is_finite().then_some((lo - pad, hi + pad)),
        size: CHART,
        legend: Legend::LowerRight,
    })
}

/// SVG documents one above the other in one SVG, each nested at its offset.
fn stack(svgs: &[String]) -> String {
    let (w, h) = CHART;
    let mut out = format!(
        "<svg width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
        h * svgs.len() as u32,
        h * svgs.len() as u32
    );
    for (i, svg) in svgs.iter().enumerate() {
        let body = svg.trim_start();
        let body = body.strip_prefix("<svg").map_or(body.to_string(), |rest| {
            format!("<svg y=\"{}\"{rest}", h * i as u32)
        });
        out.push_str(&body);
        out.push('\n');
    }
    out.push_str("</svg>\n");
    out
}
