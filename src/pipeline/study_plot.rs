//! `nas-pipe study --plot`: the studies' anytime curves drawn with the report's charts.

use crate::error::Result;
use crate::stages::search::study::Study;

/// The studies' anytime curves as one SVG chart: per pipeline, the mean over seeds of the
/// best-so-far architecture's report signal after each evaluation.
pub fn curves_svg(studies: &[(Study, std::path::PathBuf)]) -> Result<String> {
    use crate::stages::report::charts::{self, Legend, LineChart, Series, Style};
    const COLOURS: [plotters::style::RGBColor; 4] =
        [charts::TRAIN, charts::TEST, charts::LR, charts::TAIL];
    let series: Vec<Series> = studies
        .iter()
        .enumerate()
        .map(|(i, (s, _))| Series {
            name: format!("{} ({})", s.pipeline, s.strategy),
            color: COLOURS[i % COLOURS.len()],
            style: Style::Line,
            points: s
                .curve
                .iter()
                .enumerate()
                .map(|(k, &v)| ((k + 1) as f64, v))
                .collect(),
        })
        .collect();
    let first = studies.first().map(|(s, _)| s);
    let (lo, hi) = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let pad = (0.05 * (hi - lo)).max(0.1);
    charts::line_chart(&LineChart {
        title: format!(
            "Best so far, mean over {} seeds",
            first.map_or(0, |s| s.seeds.len())
        ),
        x_desc: "evaluations".into(),
        y_desc: format!(
            "{} of the best by {} (%)",
            first.map_or("report", |s| s.report_column.as_str()),
            first.map_or("search", |s| s.search_column.as_str())
        ),
        series,
        guides: Vec::new(),
        y_range: lo.is_finite().then_some((lo - pad, hi + pad)),
        size: (640, 400),
        legend: Legend::LowerRight,
    })
}
