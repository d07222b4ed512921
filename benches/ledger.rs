//! The trial ledger's cost per trial: one worker's claim + heartbeat + result, timed over
//! `N` (2,000) trials, on SQLite (a file under `exports/bench/`) and on PostgreSQL when
//! `NAS_PIPE_TEST_POSTGRES` names a server. Not a test; run by hand:
//!
//! ```text
//! scripts/with-postgres.sh cargo bench --bench ledger -- [--trials N]
//! ```
//!
//! Each trial is queued in generations of 100 (one `submit` each, not timed), then claimed,
//! heartbeaten once and completed; the median and mean per trial are printed.

use std::time::Instant;

use anyhow::{Context, Result};
use nas_pipe::stages::search::ledger::{Ledger, NewTrial, Storage, Study};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = match args.iter().position(|a| a == "--trials") {
        Some(i) => args.get(i + 1).context("--trials N")?.parse()?,
        None => 2000,
    };
    let dir = std::path::Path::new("exports/bench");
    std::fs::create_dir_all(dir)?;
    let file = dir.join("ledger-bench.sqlite");
    let _ = std::fs::remove_file(&file);
    let mut backends = vec![("sqlite", Storage::Sqlite(file))];
    match std::env::var("NAS_PIPE_TEST_POSTGRES") {
        Ok(url) => backends.push(("postgres", Storage::parse(&url)?)),
        Err(_) => eprintln!("ledger bench: NAS_PIPE_TEST_POSTGRES is not set; PostgreSQL skipped"),
    }
    for (name, storage) in backends {
        let mut l = storage.open()?;
        let per = time(l.as_mut(), n)?;
        let mut sorted = per.clone();
        sorted.sort_by(f64::total_cmp);
        let mean = per.iter().sum::<f64>() / per.len() as f64;
        println!(
            "{name:<9} {n} trials: claim+heartbeat+result median {:.3} ms, mean {:.3} ms, p99 {:.3} ms",
            1e3 * sorted[sorted.len() / 2],
            1e3 * mean,
            1e3 * sorted[sorted.len() * 99 / 100]
        );
    }
    Ok(())
}

/// Seconds per trial for `n` trials of a fresh study.
fn time(l: &mut dyn Ledger, n: usize) -> Result<Vec<f64>> {
    let study = format!("bench-{}", std::process::id());
    l.open_study(&Study {
        name: study.clone(),
        spec_hash: "bench".into(),
        version: "bench".into(),
        lease_s: 30.0,
        max_attempts: 3,
        finished: false,
    })?;
    let mut per = Vec::with_capacity(n);
    for g in 0..n.div_ceil(100) {
        let batch: Vec<NewTrial> = (g * 100..((g + 1) * 100).min(n))
            .map(|i| NewTrial {
                id: i as u64,
                generation: g as u64,
                index: (i % 100) as u64,
                proposal: format!("[{i},0,0,0,0,0]"),
            })
            .collect();
        l.submit(&study, &batch)?;
        for _ in 0..batch.len() {
            let t0 = Instant::now();
            let c = l.claim(&study, "bench")?.context("a waiting trial")?;
            l.heartbeat(&study, "bench", Some(c.id))?;
            l.complete(
                &study,
                "bench",
                c.id,
                r#"{"accuracy":0.5,"report":null,"seconds":0.0}"#,
            )?;
            per.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(per)
}
