//! How well nas-pipe's latency objective ranks NAS-Bench-201 cells: 50 cells measured
//! whole on ONNX Runtime (batch 1, 1 thread) on this machine, predicted from the per-op
//! table, and compared by Spearman rank correlation with the four Xeon columns of
//! `tables/nb201-xeon-latency.csv.gz` (HELP, measured in PyTorch on those CPUs). Not a test;
//! run by hand:
//!
//! ```text
//! source scripts/ort-env.sh && cargo bench --bench nb201_latency -- [--cells N] [--runs R] [--fresh]
//! ```
//!
//! The cells are deterministic, no seed involved: all 15,625 sorted by their `gold_6226`
//! latency (ties by index), then the `N` (50) evenly spaced ranks 0, …, 15,624. Each is
//! built on CIFAR-10's input (3×32×32, 10 classes, C = 16, N = 5: the space's defaults) and
//! measured with `latency::measure` (median of `R` = 100 timed runs after 10 warm-up runs);
//! measurements are cached in `exports/bench/latency-cache/` and reused on the next run
//! unless `--fresh`. The per-op table is measured anew each run (200 timed runs per op, the
//! all-`skip_connect` cell as reference) and saved as `exports/bench/nb201-latency-table.json`.
//! The figures go to `exports/bench/nb201-latency.json`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use nas_pipe::runtime::measure::Machine;
use nas_pipe::space::genotype::Genotype;
use nas_pipe::space::{self, Overrides};
use nas_pipe::spec::Sources;
use nas_pipe::stages::search::latency::{self, Cache, Key, Plan, Source, Table, spearman};
use serde::Serialize;

const COLUMNS: [&str; 4] = ["gold_6226", "gold_6240", "silver_4114", "silver_4210r"];
const ALL_SKIP: &str = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|";

/// One row of the Xeon table.
struct Xeon {
    index: usize,
    arch: String,
    ms: [f64; 4],
}

#[derive(Serialize)]
struct Cell {
    /// Rank by gold_6226 latency among all 15,625 (0 = fastest).
    rank: usize,
    nb201_index: usize,
    arch: String,
    macs: u64,
    ours_ms: f64,
    ours_p90_ms: f64,
    cached: bool,
    predicted_ms: f64,
    xeon_ms: [f64; 4],
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    ort_version: String,
    plan: Plan,
    table_plan: Plan,
    selection: String,
    columns: [&'static str; 4],
    table_fixed_ms: f64,
    table_reference_ms: f64,
    /// Spearman of our measurement against each Xeon column, in `columns` order.
    ours_vs_xeon: [f64; 4],
    predicted_vs_ours: f64,
    predicted_vs_xeon: [f64; 4],
    /// Context: multiply-adds against our measurement, and gold_6226 against each column.
    macs_vs_ours: f64,
    gold_6226_vs_xeon: [f64; 4],
    cells: Vec<Cell>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_xeon(path: &Path) -> Result<Vec<Xeon>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    )
    .read_to_string(&mut text)
    .with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("{}:{}: expected 6 fields", path.display(), n + 1);
        if f.len() != 6 {
            bail!(bad());
        }
        let mut ms = [0.0; 4];
        for (k, v) in f[2..].iter().enumerate() {
            ms[k] = v.parse().with_context(bad)?;
        }
        rows.push(Xeon {
            index: f[0].parse().with_context(bad)?,
            arch: f[1].to_string(),
            ms,
        });
    }
    Ok(rows)
}

fn column(cells: &[Cell], k: usize) -> Vec<f64> {
    cells.iter().map(|c| c.xeon_ms[k]).collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut n_cells = 50usize;
    let mut plan = Plan {
        batch: 1,
        threads: 1,
        warmup: 10,
        runs: 100,
    };
    let mut fresh = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cells" => n_cells = it.next().context("--cells N")?.parse()?,
            "--runs" => plan.runs = it.next().context("--runs R")?.parse()?,
            "--fresh" => fresh = true,
            // cargo bench passes --bench.
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    if n_cells < 2 {
        bail!("--cells must be at least 2");
    }
    let table_plan = Plan {
        warmup: 20,
        runs: 200,
        ..plan
    };
    let rt = nas_pipe::runtime::load(None)
        .context("the latency benchmark needs ONNX Runtime: source scripts/ort-env.sh")?;
    let machine = Machine::current();
    let mut sources = Sources::default();
    let space = space::load(
        &mut sources,
        &root().join("schemas/nas-bench-201.ron"),
        None,
        &Overrides::default(),
    )?;
    let texts: Vec<String> = sources.files.iter().map(|f| f.text.clone()).collect();
    let space_hash = latency::space_hash(&texts, &space);

    let xeon = read_xeon(&root().join("tables/nb201-xeon-latency.csv.gz"))?;
    let mut order: Vec<usize> = (0..xeon.len()).collect();
    order.sort_by(|&a, &b| xeon[a].ms[0].total_cmp(&xeon[b].ms[0]).then(a.cmp(&b)));
    let last = order.len() - 1;
    let ranks: Vec<usize> = (0..n_cells)
        .map(|i| ((i * last) as f64 / (n_cells - 1) as f64).round() as usize)
        .collect();

    println!(
        "nb201_latency: ONNX Runtime {} on {} ({} cores), batch {}, {} thread(s), median of {} runs after {} warm-up",
        rt.version, machine.cpu, machine.cores, plan.batch, plan.threads, plan.runs, plan.warmup
    );
    let t0 = Instant::now();
    let (src, g) = Genotype::from_arg(ALL_SKIP, &space)?;
    let reference = g.resolve(&src, &space)?;
    let table = Table::measure(rt, &space, (&g, &reference), &table_plan, |o| {
        eprintln!(
            "  table: {:?} on {:?}: {:.4} ms alone, {:.4} ms overhead",
            o.key.op, o.key.input, o.alone_ms, o.overhead_ms
        );
    })?;
    let out_dir = root().join("exports/bench");
    table.save(&out_dir.join("nb201-latency-table.json"))?;
    println!(
        "per-op table: {} ops, fixed part {:.3} ms (all-skip network {:.3} ms), {:.1} s",
        table.ops.len(),
        table.fixed_ms,
        table.reference_ms,
        t0.elapsed().as_secs_f64()
    );

    let cache = Cache::new(out_dir.join("latency-cache"));
    let mut cells = Vec::new();
    println!(
        "\n| rank | index | ours ms | predicted ms | {} | arch |",
        COLUMNS.join(" | ")
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let t1 = Instant::now();
    for &rank in &ranks {
        let row = &xeon[order[rank]];
        let (src, g) = Genotype::from_arg(&row.arch, &space)
            .with_context(|| format!("NB201 index {}", row.index))?;
        let arch = g.resolve(&src, &space)?;
        let net = space.build(&arch);
        let key = Key::new(&space_hash, &g, &rt.version, &machine.cpu, plan);
        let run = || latency::measure(rt, &space, &arch, &plan);
        let (l, from) = if fresh {
            let l = run()?;
            cache.put(&key, &l)?;
            (l, Source::Measured)
        } else {
            cache.get_or_measure(&key, run)?
        };
        let predicted = latency::predict(&table, &net)?;
        println!(
            "| {rank} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | `{}` |",
            row.index, l.p50, predicted, row.ms[0], row.ms[1], row.ms[2], row.ms[3], row.arch
        );
        cells.push(Cell {
            rank,
            nb201_index: row.index,
            arch: row.arch.clone(),
            macs: net.cost().macs,
            ours_ms: l.p50,
            ours_p90_ms: l.p90,
            cached: from == Source::Cached,
            predicted_ms: predicted,
            xeon_ms: row.ms,
        });
    }
    let ours: Vec<f64> = cells.iter().map(|c| c.ours_ms).collect();
    let predicted: Vec<f64> = cells.iter().map(|c| c.predicted_ms).collect();
    let macs: Vec<f64> = cells.iter().map(|c| c.macs as f64).collect();
    let per_column =
        |xs: &[f64]| -> [f64; 4] { std::array::from_fn(|k| spearman(xs, &column(&cells, k))) };
    let report = Report {
        machine,
        ort_version: rt.version.clone(),
        plan,
        table_plan,
        selection: format!(
            "all {} cells sorted by gold_6226 latency (ties by index), {} evenly spaced ranks",
            xeon.len(),
            n_cells
        ),
        columns: COLUMNS,
        table_fixed_ms: table.fixed_ms,
        table_reference_ms: table.reference_ms,
        ours_vs_xeon: per_column(&ours),
        predicted_vs_ours: spearman(&predicted, &ours),
        predicted_vs_xeon: per_column(&predicted),
        macs_vs_ours: spearman(&macs, &ours),
        gold_6226_vs_xeon: per_column(&column(&cells, 0)),
        cells,
    };
    let measured = report.cells.iter().filter(|c| !c.cached).count();
    println!(
        "\n{} cells ({} measured, {} from the cache) in {:.1} s",
        report.cells.len(),
        measured,
        report.cells.len() - measured,
        t1.elapsed().as_secs_f64()
    );
    println!(
        "\nSpearman rank correlation over the {} cells:",
        report.cells.len()
    );
    println!("| ours vs | {} |", COLUMNS.join(" | "));
    println!("|---|---:|---:|---:|---:|");
    let line = |name: &str, v: &[f64; 4]| {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            v[0], v[1], v[2], v[3]
        );
    };
    line("measured (whole network)", &report.ours_vs_xeon);
    line("predicted (per-op table)", &report.predicted_vs_xeon);
    line("gold_6226 itself", &report.gold_6226_vs_xeon);
    println!("predicted vs measured: {:.3}", report.predicted_vs_ours);
    println!("MACs vs measured: {:.3}", report.macs_vs_ours);
    let path = out_dir.join("nb201-latency.json");
    let json = serde_json::to_string_pretty(&report)?;
    nas_pipe::fsutil::write_atomic(&path, format!("{json}\n").as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}
