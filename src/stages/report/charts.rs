//! The report's charts, drawn with plotters into SVG strings: line charts (learning curves,
//! schedules), heatmaps (op weights over epochs, the confusion matrix) with their colour
//! bars, bar charts (latency, throughput) and the workers' timeline. One colour scheme for all: training blue,
//! validation and test orange, learning rate green.
//!
//! Text is SVG `<text>` in a generic sans-serif family (plotters sizes it with its own
//! estimate; no font files are read). Non-finite values are left out of every chart.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// Training curves and markers.
pub const TRAIN: RGBColor = RGBColor(31, 119, 180);
/// Validation and test curves and markers.
pub const TEST: RGBColor = RGBColor(255, 127, 14);
/// Learning rate.
pub const LR: RGBColor = RGBColor(44, 160, 44);
/// The p99 marks of the latency chart.
pub const TAIL: RGBColor = RGBColor(214, 39, 40);
const INK: RGBColor = RGBColor(51, 51, 51);
const GUIDE: RGBColor = RGBColor(190, 190, 190);
const GRID: RGBColor = RGBColor(235, 235, 235);
const FONT: &str = "sans-serif";
// Plotters writes `font-size` as the size given / 1.24; these are pixels × 1.24.
const TITLE: f64 = 20.0;
const LABEL: f64 = 15.0;
const DESC: f64 = 16.0;
const SMALL: f64 = 14.0;

fn drawing<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Input(format!("drawing the chart \"{what}\": {e}"))
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Markers,
    LineMarkers,
    /// The points are a closed polygon (a spread band: the lower edge left to right, then
    /// the upper edge right to left), filled translucent and left out of the legend.
    Area,
}

/// One named series of (x, y) points, drawn in `color`.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

/// A chart of lines and markers over an x axis of whole numbers (steps or epochs).
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// Vertical guide lines (epoch ends), in x units.
    pub guides: Vec<f64>,
    /// A fixed y range; else from the data (from 0 when every value is ≥ 0).
    pub y_range: Option<(f64, f64)>,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// Where the legend goes (where the curves are not).
    pub legend: Legend,
}

/// The preferred corner of a legend; [`line_chart`] takes another when it covers fewer
/// points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legend {
    UpperRight,
    LowerRight,
}

/// Decimals that tell ticks about (hi − lo) / 6 apart from each other.
fn decimals(lo: f64, hi: f64) -> usize {
    let step = (hi - lo).abs() / 6.0;
    if !step.is_finite() || step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10()).ceil().min(8.0) as usize
    }
}

/// A tick label with `d` decimals, thousands separated when whole.
fn tick(v: f64, d: usize) -> String {
    if d == 0 && v.abs() < 1e15 {
        let s = crate::space::show::thousands(v.abs().round() as u64);
        if v < -0.5 { format!("-{s}") } else { s }
    } else {
        format!("{v:.d$}")
    }
}

/// `lo..hi` widened so that it is never empty.
fn span(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo > 1e-12 * hi.abs().max(1.0) {
        (lo, hi)
    } else {
        let pad = (hi.abs() * 0.05).max(1e-9);
        (lo - pad, hi + pad)
    }
}

/// The SVG of a line chart.
pub fn line_chart(c: &LineChart) -> Result<String> {
    let points = || {
        c.series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (x0, x1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(x, _)| {
        (a.min(x), b.max(x))
    });
    let (x0, x1) = span(x0, x1);
    // A margin so that markers at the ends are drawn whole.
    let pad = 0.03 * (x1 - x0);
    let (x0, x1) = (x0 - pad, x1 + pad);
    let (y0, y1) = match c.y_range {
        Some(r) => r,
        None => {
            let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, y)| {
                (a.min(y), b.max(y))
            });
            let lo = if lo >= 0.0 { 0.0 } else { lo };
            let (lo, hi) = span(lo, hi);
            (lo, hi + 0.05 * (hi - lo))
        }
    };
    let err = drawing(&c.title);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, c.size).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&c.title, (FONT, TITLE).into_font().color(&INK))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(&err)?;
        // x counts steps or epochs: whole numbers, so at most one tick per unit; other x
        // values (latencies, sizes) get decimals for their range.
        let whole = points().all(|(x, _)| x.fract() == 0.0);
        let (x_ticks, dx) = if whole {
            (((x1 - x0 - 2.0 * pad).round() as usize + 1).clamp(2, 8), 0)
        } else {
            (6, decimals(x0, x1))
        };
        let dy = decimals(y0, y1);
        let x_fmt = |v: &f64| tick(*v, dx);
        let y_fmt = |v: &f64| tick(*v, dy);
        chart
            .configure_mesh()
            .x_desc(&c.x_desc)
            .y_desc(&c.y_desc)
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .axis_style(INK.mix(0.6))
            .label_style((FONT, LABEL).into_font().color(&INK))
            .axis_desc_style((FONT, DESC).into_font().color(&INK))
            .x_labels(x_ticks)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(
                c.guides
                    .iter()
                    .filter(|x| x.is_finite() && (x0..=x1).contains(*x))
                    .map(|&x| PathElement::new(vec![(x, y0), (x, y1)], GUIDE.stroke_width(1))),
            )
            .map_err(&err)?;
        for s in &c.series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let color = s.color;
            if s.style == Style::Area {
                chart
                    .draw_series(std::iter::once(Polygon::new(pts, color.mix(0.2).filled())))
                    .map_err(&err)?;
                continue;
            }
            let line = matches!(s.style, Style::Line | Style::LineMarkers);
            let marks = matches!(s.style, Style::Markers | Style::LineMarkers);
            if line {
                let drawn = chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(&err)?;
                if !marks {
                    drawn.label(&s.name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
            }
            if marks {
                let drawn = chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(&err)?;
                drawn.label(&s.name).legend(move |(x, y)| {
                    EmptyElement::at((x + 9, y))
                        + Circle::new((0, 0), 4, color.filled())
                        + PathElement::new(
                            vec![(-9, 0), (9, 0)],
                            if line {
                                color.stroke_width(2)
                            } else {
                                TRANSPARENT.stroke_width(0)
                            },
                        )
                });
            }
        }
        let corner = legend_corner(c.legend, points(), (x0, x1), (y0, y1));
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(INK.mix(0.3))
            .label_font((FONT, SMALL).into_font().color(&INK))
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

/// The corner for the legend: the one whose quarter of the plot (the outer 45% of each
/// axis) holds the fewest points, `preferred` among equals, so that it hides no data
/// where a corner is free.
fn legend_corner<'a>(
    preferred: Legend,
    points: impl Iterator<Item = &'a (f64, f64)>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    // (right, upper) for each corner, the preferred one first.
    let mut corners = [(true, true), (true, false), (false, true), (false, false)];
    if preferred == Legend::LowerRight {
        corners.swap(0, 1);
    }
    let mut counts = vec![0usize; corners.len()];
    for &(x, y) in points {
        let (fx, fy) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
        for (k, &(right, upper)) in corners.iter().enumerate() {
            let in_x = if right { fx >= 0.55 } else { fx <= 0.45 };
            let in_y = if upper { fy >= 0.55 } else { fy <= 0.45 };
            counts[k] += usize::from(in_x && in_y);
        }
    }
    let best = (0..corners.len()).min_by_key(|&k| counts[k]).unwrap_or(0);
    match corners[best] {
        (true, true) => SeriesLabelPosition::UpperRight,
        (true, false) => SeriesLabelPosition::LowerRight,
        (false, true) => SeriesLabelPosition::UpperLeft,
        (false, false) => SeriesLabelPosition::LowerLeft,
    }
}

/// A colour scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Perceptually uniform, dark blue to yellow (op weights).
    Viridis,
    /// White to dark blue (counts).
    Blues,
}

impl Palette {
    /// The colour of `t` in [0, 1] (clamped).
    pub fn color(self, t: f64) -> RGBColor {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self {
            Palette::Viridis => ViridisRGB::get_color(t),
            Palette::Blues => {
                let map = DerivedColorMap::new(&[
                    RGBColor(247, 251, 255),
                    RGBColor(107, 174, 214),
                    RGBColor(8, 48, 107),
                ]);
                map.get_color(t as f32)
            }
        }
    }
}

/// Black or white, whichever reads better on `c`.
fn ink_on(c: RGBColor) -> &'static RGBColor {
    let luma = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if luma > 140.0 { &BLACK } else { &WHITE }
}

/// A grid of coloured cells: `values[row][col]`, rows top to bottom.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub values: Vec<Vec<f64>>,
    /// The values the palette's ends stand for.
    pub range: (f64, f64),
    pub palette: Palette,
    /// Text written in each cell (`[row][col]`), or empty for none.
    pub annotations: Vec<Vec<String>>,
    /// Cells outlined (row, col).
    pub outlined: Vec<(usize, usize)>,
    pub x_desc: String,
    pub y_desc: String,
    /// Pixels per cell (width, height).
    pub cell: (u32, u32),
    /// Pixels for the row labels.
    pub label_width: u32,
}

/// At most `max` (≥ 2) of `n` evenly spaced indices, the first and the last among them.
fn every(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let step = n.div_ceil(max.max(1));
    let mut v: Vec<usize> = (0..n).step_by(step).collect();
    // The last index takes the place of the last tick, which is closer to it than a step.
    if v.last() != Some(&(n - 1)) {
        v.pop();
        v.push(n - 1);
    }
    v
}

/// The SVG of a heatmap.
pub fn heatmap(h: &Heatmap) -> Result<String> {
    let (nr, nc) = (h.rows.len().max(1), h.cols.len().max(1));
    let caption = if h.title.is_empty() { 0 } else { 26 };
    let x_area = if h.x_desc.is_empty() { 22 } else { 40 };
    let y_desc_w = if h.y_desc.is_empty() { 0 } else { 18 };
    let width = h.label_width + y_desc_w + nc as u32 * h.cell.0 + 14;
    let height = caption + 8 + nr as u32 * h.cell.1 + x_area;
    let (lo, hi) = span(h.range.0, h.range.1);
    let err = drawing(&h.title);
    // Coordinates count half cells (plotters places custom ticks on integer ranges only):
    // column c spans x in [2c, 2c + 2]; rows run top to bottom, row r spans y in
    // [2(nr - r - 1), 2(nr - r)].
    let col_ticks: Vec<i32> = every(nc, 12).iter().map(|&c| 2 * c as i32 + 1).collect();
    let row_ticks: Vec<i32> = (0..nr).map(|r| 2 * r as i32 + 1).collect();
    let col_label = |v: &i32| {
        h.cols
            .get((v / 2).max(0) as usize)
            .cloned()
            .unwrap_or_default()
    };
    // Two no-break spaces keep a gap between a row's label and its cells (SVG collapses
    // ordinary trailing spaces).
    let row_label = |v: &i32| {
        let r = nr as i32 - 1 - v / 2;
        let label = h.rows.get(r.max(0) as usize).cloned().unwrap_or_default();
        format!("{label}\u{a0}\u{a0}")
    };
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut b = ChartBuilder::on(&root);
        if caption > 0 {
            b.caption(&h.title, (FONT, DESC).into_font().color(&INK));
        }
        let mut chart = b
            .margin_top(4)
            .margin_right(10)
            .margin_left(4)
            .x_label_area_size(x_area)
            .y_label_area_size(h.label_width + y_desc_w)
            .build_cartesian_2d(
                (0..2 * nc as i32).with_key_points(col_ticks),
                (0..2 * nr as i32).with_key_points(row_ticks),
            )
            .map_err(&err)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_mesh()
            .axis_style(INK.mix(0.6))
            .label_style((FONT, SMALL).into_font().color(&INK))
            .axis_desc_style((FONT, SMALL).into_font().color(&INK))
            .x_label_formatter(&col_label)
            .y_label_formatter(&row_label);
        if !h.x_desc.is_empty() {
            mesh.x_desc(&h.x_desc);
        }
        if !h.y_desc.is_empty() {
            mesh.y_desc(&h.y_desc);
        }
        mesh.draw().map_err(&err)?;
        let cells = h
            .values
            .iter()
            .enumerate()
            .flat_map(|(r, row)| row.iter().enumerate().map(move |(c, &v)| (r, c, v)));
        let y_of = |r: usize| 2 * (nr - r - 1) as i32;
        chart
            .draw_series(cells.clone().map(|(r, c, v)| {
                let color = if v.is_finite() {
                    h.palette.color((v - lo) / (hi - lo))
                } else {
                    RGBColor(200, 200, 200)
                };
                let x = 2 * c as i32;
                Rectangle::new([(x, y_of(r)), (x + 2, y_of(r) + 2)], color.filled())
            }))
            .map_err(&err)?;
        chart
            .draw_series(
                h.outlined
                    .iter()
                    .filter(|(r, c)| *r < nr && *c < nc)
                    .map(|&(r, c)| {
                        let x = 2 * c as i32;
                        Rectangle::new([(x, y_of(r)), (x + 2, y_of(r) + 2)], TAIL.stroke_width(2))
                    }),
            )
            .map_err(&err)?;
        if !h.annotations.is_empty() {
            let size = (h.cell.1 as f64 * 0.6).clamp(11.0, 17.0);
            chart
                .draw_series(cells.filter_map(|(r, c, v)| {
                    let text = h.annotations.get(r)?.get(c)?;
                    let bg = h.palette.color((v - lo) / (hi - lo));
                    let style = TextStyle::from((FONT, size).into_font())
                        .color(ink_on(bg))
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    Some(Text::new(
                        text.clone(),
                        (2 * c as i32 + 1, y_of(r) + 1),
                        style,
                    ))
                }))
                .map_err(&err)?;
        }
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

/// A horizontal colour bar for `palette` from `lo` to `hi`, with its axis labelled `desc`.
pub fn colour_bar(palette: Palette, lo: f64, hi: f64, desc: &str) -> Result<String> {
    let (lo, hi) = span(lo, hi);
    let err = drawing(desc);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (380, 66)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(16)
            .margin_right(24)
            .margin_top(4)
            .x_label_area_size(42)
            .build_cartesian_2d(lo..hi, 0f64..1f64)
            .map_err(&err)?;
        let d = decimals(lo, hi);
        let fmt = |v: &f64| tick(*v, d);
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_y_axis()
            .x_labels(5)
            .x_label_formatter(&fmt)
            .x_desc(desc)
            .axis_style(INK.mix(0.6))
            .label_style((FONT, SMALL).into_font().color(&INK))
            .axis_desc_style((FONT, SMALL).into_font().color(&INK))
            .draw()
            .map_err(&err)?;
        let n = 64;
        chart
            .draw_series((0..n).map(|i| {
                let (a, b) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                Rectangle::new(
                    [(lo + a * (hi - lo), 0.0), (lo + b * (hi - lo), 1.0)],
                    palette.color((a + b) / 2.0).filled(),
                )
            }))
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

/// One bar of a bar chart, with optional marks drawn across it.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// (name, value) marks, e.g. ("p90", 0.12); the same names in the same order on
    /// every bar.
    pub marks: Vec<(String, f64)>,
}

/// A vertical bar chart.
#[derive(Debug, Clone)]
pub struct Bars {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// What the bars themselves show (the legend; none when empty).
    pub name: String,
    pub color: RGBColor,
    pub bars: Vec<Bar>,
    /// A colour per mark name, in the marks' order.
    pub mark_colors: Vec<RGBColor>,
    pub size: (u32, u32),
}

/// The SVG of a bar chart.
pub fn bars(b: &Bars) -> Result<String> {
    let n = b.bars.len().max(1);
    let top = b
        .bars
        .iter()
        .flat_map(|x| std::iter::once(x.value).chain(x.marks.iter().map(|m| m.1)))
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max);
    let (_, top) = span(0.0, top);
    let top = top * 1.12;
    let err = drawing(&b.title);
    // Bar i spans x in [10i, 10i + 10] (integer coordinates: see `heatmap`).
    let ticks: Vec<i32> = (0..n).map(|i| 10 * i as i32 + 5).collect();
    let label = |v: &i32| {
        b.bars
            .get((v / 10).max(0) as usize)
            .map(|x| x.label.clone())
            .unwrap_or_default()
    };
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, b.size).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&b.title, (FONT, TITLE).into_font().color(&INK))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d((0..10 * n as i32).with_key_points(ticks), 0f64..top)
            .map_err(&err)?;
        let d = decimals(0.0, top);
        let y_fmt = |v: &f64| tick(*v, d);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .axis_style(INK.mix(0.6))
            .x_label_formatter(&label)
            .y_label_formatter(&y_fmt)
            .x_desc(&b.x_desc)
            .y_desc(&b.y_desc)
            .y_labels(6)
            .label_style((FONT, LABEL).into_font().color(&INK))
            .axis_desc_style((FONT, DESC).into_font().color(&INK))
            .draw()
            .map_err(&err)?;
        let color = b.color;
        let drawn = chart
            .draw_series(b.bars.iter().enumerate().map(|(i, x)| {
                let v = if x.value.is_finite() { x.value } else { 0.0 };
                let x = 10 * i as i32;
                Rectangle::new([(x + 2, 0.0), (x + 8, v)], color.filled())
            }))
            .map_err(&err)?;
        let legend = !b.name.is_empty();
        if legend {
            drawn.label(&b.name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
            });
        }
        for (k, mark_color) in b.mark_colors.iter().enumerate() {
            let Some(name) = b
                .bars
                .iter()
                .find_map(|x| x.marks.get(k).map(|m| m.0.clone()))
            else {
                continue;
            };
            let mc = *mark_color;
            chart
                .draw_series(b.bars.iter().enumerate().filter_map(|(i, x)| {
                    let v = x.marks.get(k)?.1;
                    v.is_finite().then(|| {
                        let x = 10 * i as i32;
                        PathElement::new(vec![(x + 1, v), (x + 9, v)], mc.stroke_width(3))
                    })
                }))
                .map_err(&err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], mc.stroke_width(3))
                });
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(INK.mix(0.3))
                .label_font((FONT, SMALL).into_font().color(&INK))
                .draw()
                .map_err(&err)?;
        }
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

/// Workers drawn at most in [`timeline`]; the rest are left out (the caption says so).
pub const TIMELINE_ROWS: usize = 32;

/// The workers' timeline: a row per worker (the first [`TIMELINE_ROWS`]), a bar per
/// evaluation from its start to its end; failed trials in red.
pub fn timeline(t: &crate::run::trials::Timeline) -> Result<String> {
    let rows = t.workers.len().clamp(1, TIMELINE_ROWS);
    let end = t.span().max(1e-3) * 1.02;
    let title = "Workers: when each evaluated what";
    let err = drawing(title);
    let label = |v: &i32| {
        t.workers
            .get((v / 10).max(0) as usize)
            .map(|w| w.worker.clone())
            .unwrap_or_default()
    };
    let ticks: Vec<i32> = (0..rows).map(|i| 10 * i as i32 + 5).collect();
    let height = 110 + 26 * rows as u32;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (640, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, TITLE).into_font().color(&INK))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..end, (0..10 * rows as i32).with_key_points(ticks))
            .map_err(&err)?;
        let d = decimals(0.0, end);
        let x_fmt = |v: &f64| tick(*v, d);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .axis_style(INK.mix(0.6))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&label)
            .x_desc("seconds since the first evaluation started")
            .label_style((FONT, SMALL).into_font().color(&INK))
            .axis_desc_style((FONT, DESC).into_font().color(&INK))
            .draw()
            .map_err(&err)?;
        let bars = t.workers.iter().take(rows).enumerate().flat_map(|(i, w)| {
            let y = 10 * i as i32;
            w.spans.iter().map(move |s| {
                let c = if s.failed { TAIL } else { TRAIN };
                // At least a visible sliver: table lookups take microseconds.
                let e = s.end.max(s.start + end * 0.003);
                Rectangle::new([(s.start, y + 2), (e, y + 8)], c.filled())
            })
        });
        chart.draw_series(bars).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #22: the final test-accuracy point hid under the legend at the right edge.
    #[test]
    fn legend_moves_off_the_points() {
        let (x, y) = ((0.0, 10.0), (0.0, 100.0));
        let free = [(1.0, 10.0), (2.0, 50.0)];
        assert!(matches!(
            legend_corner(Legend::UpperRight, free.iter(), x, y),
            SeriesLabelPosition::UpperRight
        ));
        let end = [(9.0, 90.0), (9.5, 95.0), (1.0, 10.0)];
        assert!(matches!(
            legend_corner(Legend::UpperRight, end.iter(), x, y),
            SeriesLabelPosition::LowerRight
        ));
    }

    #[test]
    fn ticks_have_the_decimals_their_spacing_needs() {
        assert_eq!(tick(10000.0, decimals(0.0, 10000.0)), "10,000");
        assert_eq!(tick(0.05, decimals(0.0, 0.05)), "0.050");
        assert_eq!(tick(1.5, decimals(0.0, 1.8)), "1.5");
    }

    #[test]
    fn every_keeps_the_ends() {
        assert_eq!(every(5, 12), vec![0, 1, 2, 3, 4]);
        assert_eq!(every(30, 12), vec![0, 3, 6, 9, 12, 15, 18, 21, 24, 29]);
        assert_eq!(every(50, 12), vec![0, 5, 10, 15, 20, 25, 30, 35, 40, 49]);
        assert_eq!(every(13, 12), vec![0, 2, 4, 6, 8, 10, 12]);
    }

    #[test]
    fn degenerate_data_still_draws() {
        let c = LineChart {
            title: "one point".into(),
            x_desc: "step".into(),
            y_desc: "loss".into(),
            series: vec![Series {
                name: "train".into(),
                color: TRAIN,
                style: Style::LineMarkers,
                points: vec![(1.0, 0.5), (2.0, f64::NAN)],
            }],
            guides: vec![1.0],
            y_range: None,
            size: (400, 300),
            legend: Legend::UpperRight,
        };
        let svg = line_chart(&c).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN"));
        let h = Heatmap {
            title: String::new(),
            rows: vec!["a".into()],
            cols: vec!["1".into()],
            values: vec![vec![0.3]],
            range: (0.3, 0.3),
            palette: Palette::Viridis,
            annotations: vec![vec!["0.3".into()]],
            outlined: vec![(0, 0)],
            x_desc: String::new(),
            y_desc: String::new(),
            cell: (20, 14),
            label_width: 40,
        };
        let svg = heatmap(&h).unwrap();
        assert!(svg.contains("0.3") && !svg.contains("NaN"));
    }
}
