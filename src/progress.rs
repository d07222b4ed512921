//! What long work tells the person waiting: progress bars on a terminal, a plain line every
//! few seconds otherwise (a log file, CI, `nohup`), and notes (stage and epoch lines), all
//! on stderr.
//!
//! One process-wide setting, [`configure`]d once by the binary: `quiet` silences bars,
//! plain lines and notes (errors and results on stdout are unaffected); `every` is the
//! interval of plain lines; `json` turns everything this module prints into one JSON
//! object per line, for machines, and never draws a bar. nas-pipe writes no colour of its
//! own; clap's help and errors honour `NO_COLOR`.
//!
//! A plain line reads
//! `search 1/3: 3,200/12,800 images (25%), 31.2 images/s, ETA 5m 07s, pipeline ETA 24m 10s,
//! loss 1.234`; its JSON form `{"event":"progress","task":"search 1/3","done":3200,
//! "total":12800,"unit":"image","rate":31.2,"eta_s":307.7,"pipeline_eta_s":1450.2,
//! "elapsed_s":102.6,"message":"loss 1.234"}`. The pipeline ETA comes from the [`Outlook`]
//! a pipeline run sets ([`outlook`]) and is shown by epoch bars ([`epoch`]) only; without
//! one it is left out of the line and `null` in JSON. A note is
//! `{"event":"note","text":…}`, a stage's news `{"event":"stage","stage":"search",
//! "status":"done","seconds":…,"text":…}` ([`stage`]), an error `{"event":"error",…}`
//! ([`error`]).

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default interval of plain progress lines, in seconds.
pub const DEFAULT_EVERY_SECS: u64 = 30;

static QUIET: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);
static EVERY_MS: AtomicU64 = AtomicU64::new(DEFAULT_EVERY_SECS * 1000);
static OUTLOOK: Mutex<Option<Outlook>> = Mutex::new(None);

/// Where an epoch bar stands in its stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    /// The stage's name (`search`, `retrain`).
    pub stage: &'static str,
    /// The epoch, from 0, of `epochs`.
    pub epoch: usize,
    pub epochs: usize,
}

/// What an epoch bar tells the [`Outlook`] each time it reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub place: Place,
    /// Items of this epoch.
    pub total: u64,
    /// Items per second measured in this epoch (0 before the first).
    pub rate: f64,
    /// Seconds left to the end of this epoch at that rate.
    pub left_s: f64,
}

/// Seconds left to the end of the whole pipeline after a [`Tick`]; `None` when unknown.
pub type Outlook = Box<dyn Fn(&Tick) -> Option<f64> + Send + Sync>;

/// Keeps an [`Outlook`] set; dropping it removes it.
pub struct OutlookGuard(());

/// Sets the process-wide [`Outlook`] until the guard is dropped.
pub fn outlook(o: Outlook) -> OutlookGuard {
    if let Ok(mut g) = OUTLOOK.lock() {
        *g = Some(o);
    }
    OutlookGuard(())
}

impl Drop for OutlookGuard {
    fn drop(&mut self) {
        if let Ok(mut g) = OUTLOOK.lock() {
            *g = None;
        }
    }
}

/// The pipeline's seconds left after `tick`, when an [`Outlook`] is set and knows.
fn pipeline_eta(tick: &Tick) -> Option<f64> {
    if !(tick.rate.is_finite() && tick.rate > 0.0) {
        return None;
    }
    let g = OUTLOOK.lock().ok()?;
    g.as_ref()?(tick).filter(|s| s.is_finite() && *s >= 0.0)
}

/// Sets the process-wide reporting: `quiet` silences everything this module prints;
/// `every` is the interval between plain progress lines (at least 1 ms); `json` prints
/// JSON lines in place of text.
pub fn configure(quiet: bool, every: Duration, json: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
    EVERY_MS.store((every.as_millis() as u64).max(1), Ordering::Relaxed);
}

/// Whether [`configure`] asked for JSON lines.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Prints one JSON object, `{"event": kind, ...fields}`, as a line on stderr.
fn emit(kind: &str, fields: serde_json::Value) {
    let mut object = serde_json::Map::new();
    object.insert("event".into(), kind.into());
    if let serde_json::Value::Object(f) = fields {
        object.extend(f);
    }
    eprintln!("{}", serde_json::Value::Object(object));
}

/// A stage's news (`status`: running, cached, restored, kept, done): `text` as a note, or
/// a `stage` event with `seconds` when given.
pub fn stage(stage: &str, status: &str, seconds: Option<f64>, text: &str) {
    if quiet() {
        return;
    }
    if json() {
        let mut f = serde_json::json!({"stage": stage, "status": status, "text": text});
        if let Some(s) = seconds {
            f["seconds"] = s.into();
        }
        emit("stage", f);
    } else {
        eprintln!("{text}");
    }
}

/// Prints an error that ends the command (never silenced): `nas-pipe: {message}`, or an
/// `error` event with the exit code.
pub fn error(message: &str, exit_code: i32) {
    if json() {
        emit(
            "error",
            serde_json::json!({"message": message.trim_end(), "exit_code": exit_code}),
        );
    } else {
        eprint!("nas-pipe: {message}");
        if !message.ends_with('\n') {
            eprintln!();
        }
    }
}

/// Whether [`configure`] silenced reporting.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints `line` to stderr unless quiet (a `note` event in JSON).
pub fn note(line: &str) {
    if quiet() {
    } else if json() {
        emit("note", serde_json::json!({ "text": line }));
    } else {
        eprintln!("{line}");
    }
}

/// Progress over a known number of items: an indicatif bar on a terminal, a plain line
/// every [`configure`]d interval otherwise, nothing when hidden or quiet.
pub struct Bar {
    bar: indicatif::ProgressBar,
    plain: Option<Mutex<Plain>>,
}

/// The state of plain-line reporting.
struct Plain {
    prefix: String,
    unit: String,
    len: u64,
    pos: u64,
    message: String,
    start: Instant,
    last: Instant,
    every: Duration,
    /// Set for an epoch bar: the pipeline ETA is shown.
    place: Option<Place>,
}

/// A bar over `images` images, labelled `prefix`; hidden unless `show`.
pub fn images(show: bool, images: usize, prefix: &str) -> Bar {
    count(show, images as u64, prefix, "image")
}

/// A bar over `n` items called `unit` (e.g. evaluations), labelled `prefix`; hidden unless
/// `show`.
pub fn count(show: bool, n: u64, prefix: &str, unit: &str) -> Bar {
    bar(show, n, prefix, unit, None)
}

/// A bar over the `n` items called `unit` that make up stage `stage` (e.g. a multi-trial
/// search's evaluations), labelled `stage`, showing the pipeline ETA after its own; hidden
/// unless `show`.
pub fn stage_count(show: bool, n: u64, stage: &'static str, unit: &str) -> Bar {
    let place = Place {
        stage,
        epoch: 0,
        epochs: 1,
    };
    bar(show, n, stage, unit, Some(place))
}

/// A bar over the `images` images of epoch `epoch` (from 0) of `epochs` of `stage`,
/// labelled `stage epoch/epochs` (counting from 1), showing the pipeline ETA after its
/// own; hidden unless `show`.
pub fn epoch(show: bool, images: usize, stage: &'static str, epoch: usize, epochs: usize) -> Bar {
    let place = Place {
        stage,
        epoch,
        epochs,
    };
    let prefix = format!("{stage} {}/{epochs}", epoch + 1);
    bar(show, images as u64, &prefix, "image", Some(place))
}

fn bar(show: bool, n: u64, prefix: &str, unit: &str, place: Option<Place>) -> Bar {
    if !show || quiet() {
        return Bar {
            bar: indicatif::ProgressBar::hidden(),
            plain: None,
        };
    }
    if json() || !std::io::stderr().is_terminal() {
        let now = Instant::now();
        let plain = Plain {
            prefix: prefix.to_string(),
            unit: unit.to_string(),
            len: n,
            pos: 0,
            message: String::new(),
            start: now,
            last: now,
            every: Duration::from_millis(EVERY_MS.load(Ordering::Relaxed)),
            place,
        };
        return Bar {
            bar: indicatif::ProgressBar::hidden(),
            plain: Some(Mutex::new(plain)),
        };
    }
    Bar {
        bar: terminal_bar(n, prefix, unit, place),
        plain: None,
    }
}

fn terminal_bar(n: u64, prefix: &str, unit: &str, place: Option<Place>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit}s, {{rate}} {unit}s/s, ETA {{eta}}{{pipeline}} {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate_text(s.per_sec()));
            },
        )
        .with_key(
            "pipeline",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let tick = place.map(|place| Tick {
                    place,
                    total: s.len().unwrap_or(0),
                    rate: s.per_sec(),
                    left_s: s.eta().as_secs_f64(),
                });
                if let Some(eta) = tick.as_ref().and_then(pipeline_eta) {
                    let _ = write!(w, ", pipeline ETA {}", duration(eta));
                }
            },
        )
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

impl Bar {
    /// Advances by `n` items.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.with_plain(|p| p.pos += n);
    }

    /// Sets the number of items done.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.with_plain(|p| p.pos = pos);
    }

    /// Sets the text shown after the rate and ETA (e.g. the running loss).
    pub fn set_message(&self, message: String) {
        if let Some(p) = &self.plain
            && let Ok(mut p) = p.lock()
        {
            p.message.clone_from(&message);
        }
        self.bar.set_message(message);
    }

    /// Removes a terminal bar; plain reporting stops (in JSON, after a last line).
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
        if json()
            && let Some(p) = &self.plain
            && let Ok(p) = p.lock()
        {
            p.print(p.start.elapsed());
        }
    }

    /// Applies `f` to the plain state and prints a line when the interval has passed.
    fn with_plain(&self, f: impl FnOnce(&mut Plain)) {
        let Some(p) = &self.plain else { return };
        let Ok(mut p) = p.lock() else { return };
        f(&mut p);
        let now = Instant::now();
        if now.duration_since(p.last) >= p.every {
            p.last = now;
            p.print(now.duration_since(p.start));
        }
    }
}

impl Plain {
    /// Prints the line for `elapsed`, as text or as a `progress` event.
    fn print(&self, elapsed: Duration) {
        if json() {
            emit("progress", self.fields(elapsed));
        } else {
            eprintln!("{}", self.line(elapsed));
        }
    }

    /// Items per second after `elapsed`.
    fn rate(&self, elapsed: Duration) -> f64 {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            self.pos as f64 / secs
        } else {
            0.0
        }
    }

    /// The pipeline ETA after `elapsed` with this bar's `rate` and own `eta`.
    fn pipeline_eta(&self, rate: f64, eta: Option<f64>) -> Option<f64> {
        let tick = Tick {
            place: self.place?,
            total: self.len,
            rate,
            left_s: eta?,
        };
        pipeline_eta(&tick)
    }

    /// The `progress` event's fields; `eta_s` is null until a rate is known,
    /// `pipeline_eta_s` also when no [`Outlook`] knows.
    fn fields(&self, elapsed: Duration) -> serde_json::Value {
        let rate = self.rate(elapsed);
        let eta = (rate > 0.0).then(|| self.len.saturating_sub(self.pos) as f64 / rate);
        serde_json::json!({
            "task": self.prefix,
            "done": self.pos,
            "total": self.len,
            "unit": self.unit,
            "rate": rate,
            "eta_s": eta,
            "pipeline_eta_s": self.pipeline_eta(rate, eta),
            "elapsed_s": elapsed.as_secs_f64(),
            "message": self.message,
        })
    }

    /// `prefix: pos/len units (pct%), rate units/s, ETA t[, message]` after `elapsed`.
    fn line(&self, elapsed: Duration) -> String {
        let rate = self.rate(elapsed);
        let pct = if self.len > 0 {
            100.0 * self.pos as f64 / self.len as f64
        } else {
            100.0
        };
        let left = (rate > 0.0).then(|| self.len.saturating_sub(self.pos) as f64 / rate);
        let eta = left.map_or_else(|| "unknown".to_string(), duration);
        let mut line = format!(
            "{}: {}/{} {}s ({pct:.0}%), {} {}s/s, ETA {eta}",
            self.prefix,
            grouped(self.pos),
            grouped(self.len),
            self.unit,
            rate_text(rate),
            self.unit,
        );
        if let Some(p) = self.pipeline_eta(rate, left) {
            line += &format!(", pipeline ETA {}", duration(p));
        }
        if !self.message.is_empty() {
            line += ", ";
            line += &self.message;
        }
        line
    }
}

/// `n` with thousands separators: `12,800`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with three significant digits and separators: `0.0123`, `31.2`, `11,570,726`.
pub fn rate_text(r: f64) -> String {
    if !r.is_finite() {
        return r.to_string();
    }
    if r >= 1000.0 {
        grouped(r.round() as u64)
    } else if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else if r >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

/// Seconds as `42.4s`, `5m 07s` or `1h 02m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{:.1}s", secs.max(0.0)),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_has_progress_rate_eta_and_message() {
        let start = Instant::now();
        let p = Plain {
            prefix: "search 1/3".into(),
            unit: "image".into(),
            len: 12_800,
            pos: 3_200,
            message: "loss 1.234".into(),
            start,
            last: start,
            every: Duration::from_secs(30),
            place: None,
        };
        assert_eq!(
            p.line(Duration::from_secs(100)),
            "search 1/3: 3,200/12,800 images (25%), 32.0 images/s, ETA 5m 00s, loss 1.234"
        );
    }

    #[test]
    fn json_fields_carry_the_same_numbers() {
        let start = Instant::now();
        let p = Plain {
            prefix: "retrain 2/8".into(),
            unit: "image".into(),
            len: 1000,
            pos: 250,
            message: "loss 0.5".into(),
            start,
            last: start,
            every: Duration::from_secs(30),
            place: None,
        };
        let f = p.fields(Duration::from_secs(10));
        assert_eq!(f["task"], "retrain 2/8");
        assert_eq!(
            (f["done"].as_u64(), f["total"].as_u64()),
            (Some(250), Some(1000))
        );
        assert_eq!(f["rate"].as_f64(), Some(25.0));
        assert_eq!(f["eta_s"].as_f64(), Some(30.0));
        assert_eq!(f["message"], "loss 0.5");
        let idle = Plain { pos: 0, ..p };
        assert!(idle.fields(Duration::from_secs(10))["eta_s"].is_null());
    }

    /// An epoch bar shows the outlook's pipeline ETA after its own, and in JSON; without an
    /// outlook it is left out (and null).
    #[test]
    fn epoch_lines_carry_the_pipeline_eta() {
        let start = Instant::now();
        let p = Plain {
            prefix: "search 1/3".into(),
            unit: "image".into(),
            len: 1000,
            pos: 250,
            message: String::new(),
            start,
            last: start,
            every: Duration::from_secs(30),
            place: Some(Place {
                stage: "search",
                epoch: 0,
                epochs: 3,
            }),
        };
        assert!(p.fields(Duration::from_secs(10))["pipeline_eta_s"].is_null());
        let _guard = outlook(Box::new(|t: &Tick| {
            Some(t.left_s + (t.place.epochs - t.place.epoch - 1) as f64 * 100.0)
        }));
        assert_eq!(
            p.line(Duration::from_secs(10)),
            "search 1/3: 250/1,000 images (25%), 25.0 images/s, ETA 30.0s, pipeline ETA 3m 50s"
        );
        assert_eq!(
            p.fields(Duration::from_secs(10))["pipeline_eta_s"].as_f64(),
            Some(230.0)
        );
    }

    #[test]
    fn numbers_read_easily() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(11_570_726), "11,570,726");
        assert_eq!(rate_text(11_570_726.1), "11,570,726");
        assert_eq!(rate_text(113.49), "113");
        assert_eq!(rate_text(31.24), "31.2");
        assert_eq!(rate_text(0.01234), "0.012");
        assert_eq!(duration(42.4), "42.4s");
        assert_eq!(duration(307.0), "5m 07s");
        assert_eq!(duration(3720.0), "1h 02m");
    }
}
