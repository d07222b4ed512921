//! Times one retraining step of DARTS_V2 (C = 16, 8 layers, 3×32×32, batch 64: forward in
//! training mode with drop path 0.2, cross-entropy, backward, SGD with momentum, weight decay
//! and clipping) and one evaluation-mode forward of the same batch. Prints the median of
//! repeated runs after a warm-up. Not a test: run it by hand with
//! `cargo run --release --example train_bench [-- --runs N] [-- --batch B]`.
//!
//! The peer figure, measured with PyTorch on the same 2 cores: 0.38 s per step.

use std::time::Instant;

use candle_core::{Device, Tensor};
use nas_pipe::genotype::Genotype;
use nas_pipe::model::{Mode, Model};
use nas_pipe::space::{self, Overrides};
use nas_pipe::spec::Sources;
use nas_pipe::spec::space::Input;
use nas_pipe::train::{Recipe, Trainer};
use rand::SeedableRng;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    nas_pipe::cli::tune_runtime();
    let runs = arg("--runs", 5);
    let batch = arg("--batch", 64);
    let dev = Device::Cpu;
    let mut sources = Sources::default();
    let ov = Overrides {
        input: Some(Input {
            channels: 3,
            size: 32,
            classes: 10,
        }),
        channels: Some((16, Default::default())),
        layers: Some((8, Default::default())),
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let space = space::load(&mut sources, &root.join("schemas/darts.ron"), None, &ov)?;
    let (src, g) = Genotype::from_arg("DARTS_V2", &space)?;
    let net = space.build(&g.resolve(&src, &space)?);
    let model = Model::new(&net, &dev, 0, false)?;
    let recipe = Recipe {
        epochs: 1,
        batch_size: batch,
        lr: 0.025,
        lr_min: 0.0,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 3e-4,
        grad_clip: Some(5.0),
        warmup_epochs: 0,
        auxiliary_weight: 0.0,
        drop_path: 0.2,
        label_smoothing: 0.0,
        eval_every: 1,
    };
    let mut trainer = Trainer::new(model, &recipe);
    let x = Tensor::randn(0f32, 1f32, (batch, 3, 32, 32), &dev)?;
    let y = Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<u32>>(),
        batch,
        &dev,
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    println!(
        "nas-pipe retrain benchmark: DARTS_V2, C=16, 8 layers, {} params, {:.1} M MACs/image, batch {batch}, median of {runs} runs after one warm-up, {} threads",
        net.cost().params,
        net.cost().macs as f64 / 1e6,
        rayon::current_num_threads()
    );
    let mut step = Vec::new();
    let mut infer = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        trainer.step(&x, &y, 0.025, 0.2, &mut rng)?;
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        trainer
            .model
            .forward(&x, Mode::Eval)?
            .logits
            .sum_all()?
            .to_scalar::<f32>()?;
        let e = t.elapsed().as_secs_f64();
        if i > 0 {
            step.push(s);
            infer.push(e);
        }
    }
    let (s, e) = (median(step), median(infer));
    println!(
        "training step      {:8.3} s   {:7.1} images/s   (PyTorch: 0.38 s, ratio {:.2})",
        s,
        batch as f64 / s,
        s / 0.38 * 64.0 / batch as f64
    );
    println!(
        "inference forward  {:8.3} s   {:7.1} images/s",
        e,
        batch as f64 / e
    );
    Ok(())
}
