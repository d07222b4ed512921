//! Batch-1 inference latency of DARTS_V2 at C = 36, 20 cells, 3×32×32 (the network of the
//! DARTS paper, 3.35M parameters): Candle's eval-mode forward next to ONNX Runtime on the
//! model nas-pipe exports (BN folded, opset 21), on 1 and 2 threads. Not a test: run it by
//! hand with `cargo run --release --example inference_bench [-- --runs N]` after
//! `source scripts/ort-env.sh` (ONNX Runtime from PyPI).
//!
//! The peer: `benches/reference/darts_v2_onnx.py` times `torch.onnx`'s export of the same
//! network in ONNX Runtime next to ours (PyTorch needed, so run by hand).

use std::time::Instant;

use candle_core::{Device, Tensor};
use nas_pipe::export::{Metadata, Options, export};
use nas_pipe::genotype::Genotype;
use nas_pipe::model::{Mode, Model};
use nas_pipe::profile::{Known, Plan};
use nas_pipe::space::{self, Overrides};
use nas_pipe::spec::Sources;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    nas_pipe::cli::tune_runtime();
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dev = Device::Cpu;
    let mut sources = Sources::default();
    let ov = Overrides {
        input: None,
        channels: Some((36, Default::default())),
        layers: Some((20, Default::default())),
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let space = space::load(&mut sources, &root.join("schemas/darts.ron"), None, &ov)?;
    let (src, g) = Genotype::from_arg("DARTS_V2", &space)?;
    let net = space.build(&g.resolve(&src, &space)?);
    let model = Model::new(&net, &dev, 0, false)?;
    let x = Tensor::randn(0f32, 1f32, (1, 3, 32, 32), &dev)?;
    let mut candle = Vec::new();
    for i in 0..=runs.min(50) {
        let t = Instant::now();
        model.forward(&x, Mode::Eval)?.logits.to_vec2::<f32>()?;
        if i > 0 {
            candle.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let meta = Metadata {
        spec_hash: "inference-bench".into(),
        genotype: g.to_ron(),
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        classes: vec![],
    };
    let bytes = export(&model, &meta, &Options::default())?;
    let path = std::env::temp_dir().join(format!("darts-v2-c36-l20-{}.onnx", std::process::id()));
    std::fs::write(&path, &bytes)?;
    let rt = nas_pipe::runtime::load(None)?;
    let plan = Plan::default().with_overrides(Some(&[1]), Some(&[1, 2]), Some(20), Some(runs))?;
    let cost = net.cost();
    let report = nas_pipe::profile::run(
        rt,
        &path,
        &plan,
        Known {
            params: Some(cost.params),
            macs: Some(cost.macs),
        },
        |_| {},
    )?;
    let _ = std::fs::remove_file(&path);
    println!(
        "DARTS_V2, C=36, 20 cells, 3x32x32, batch 1: {} params, {:.1} M MACs; ONNX Runtime {}",
        cost.params,
        cost.macs as f64 / 1e6,
        rt.version
    );
    println!("| runtime | threads | p50 ms | mean ms | p90 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| Candle (eval forward) | {} | {:.2} | {:.2} | |",
        rayon::current_num_threads(),
        median(candle.clone()),
        candle.iter().sum::<f64>() / candle.len() as f64
    );
    for r in &report.rows {
        println!(
            "| ONNX Runtime (nas-pipe export) | {} | {:.2} | {:.2} | {:.2} |",
            r.threads, r.latency_ms.p50, r.latency_ms.mean, r.latency_ms.p90
        );
    }
    Ok(())
}
