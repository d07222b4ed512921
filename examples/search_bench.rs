//! Times one DARTS supernet training step (one cell, C = 16, 32×32, batch 64: forward,
//! backward and SGD update) and each op's forward + backward at that size, stride 1 and 2.
//! Prints the median of repeated runs after a warm-up. Not a test: run it by hand with
//! `cargo run --release --example search_bench [-- --runs N]`.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use nas_pipe::nn::Store;
use nas_pipe::ops::{BnMode, Op};
use nas_pipe::optim::Sgd;
use nas_pipe::space::{self, Overrides};
use nas_pipe::spec::space::SearchSpace;
use nas_pipe::spec::{Source, Sources};
use nas_pipe::strategy::darts::loss_and_correct;
use nas_pipe::supernet::Supernet;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> anyhow::Result<()> {
    nas_pipe::cli::tune_runtime();
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dev = Device::Cpu;
    let darts =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/darts.ron"))?
            .replace("layers: 8,", "layers: 1,")
            .replace("reductions_at: [Third, TwoThirds],", "reductions_at: [],");
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(Path::new("one-cell.ron"), darts));
    let raw: SearchSpace = sources.parse(id)?;
    let space = space::compile(&sources, &raw, &Overrides::default());
    println!(
        "nas-pipe search benchmark: median of {runs} runs after one warm-up, {} threads",
        rayon::current_num_threads()
    );
    match space {
        Ok(space) => {
            let net = Supernet::new(&space, &dev, 0)?;
            let mut opt = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
            let x = Tensor::randn(0f32, 1f32, (64, 3, 32, 32), &dev)?;
            let y = Tensor::zeros(64, DType::U32, &dev)?;
            let t = time(runs, || {
                let logits = net.forward(&x, true).unwrap();
                let g = loss_and_correct(&logits, &y).unwrap().0.backward().unwrap();
                opt.step(&g, 0.025).unwrap();
            });
            println!(
                "{:<44} {:>10.1} ms",
                "supernet step (1 DARTS cell, C=16, 32x32, b64)",
                1e3 * t
            );
        }
        Err(e) => println!("one-cell space: {e}"),
    }
    for stride in [1usize, 2] {
        for op in Op::ALL {
            if matches!(op, Op::InvertedResidual { .. }) {
                continue;
            }
            let store = Store::new(&dev, 0);
            let m = op.build(
                &store.root(),
                16,
                16,
                stride,
                BnMode {
                    affine: false,
                    pool_bn: true,
                },
            )?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1f32, (64, 16, 32, 32), &dev)?)?;
            let t = time(runs, || {
                let y = m.forward(x.as_tensor(), true).unwrap();
                let _ = y.sum_all().unwrap().backward().unwrap();
            });
            println!(
                "{:<44} {:>10.1} ms",
                format!("{} stride {stride} fwd+bwd", op.describe()),
                1e3 * t
            );
        }
    }
    Ok(())
}
