//! PC-DARTS (Xu et al., ICLR 2020) as in its paper and code: partial channels
//! and edge normalisation live in the supernet ([`crate::nets::supernet::Build`]); the policy here
//! is DARTS's step with the architecture weights (α and β) frozen for the first
//! `arch_warmup_epochs` epochs, while the weights train.
//!
//! During the warm-up the validation batch is still scored (a training-mode forward whose
//! BN statistics are put back, [`Darts::val_stats`]), so the per-epoch figures stay
//! comparable; Adam takes no step, as in the reference.

use candle_core::{Result, Tensor};

use super::step::{BatchStats, Darts};

/// PC-DARTS's state: DARTS's and the warm-up length.
pub struct PcDarts {
    pub darts: Darts,
    /// Epochs (from 0) before the first architecture update.
    pub arch_warmup_epochs: usize,
}

impl PcDarts {
    /// One step of epoch `epoch`: the architecture update (from epoch
    /// `arch_warmup_epochs` on) on the validation batch, then the weight update on the
    /// training batch at rate `lr`. Returns (train, validation) stats.
    pub fn step(
        &mut self,
        xt: &Tensor,
        yt: &Tensor,
        xv: &Tensor,
        yv: &Tensor,
        lr: f64,
        epoch: usize,
    ) -> Result<(BatchStats, BatchStats)> {
        let val = if epoch < self.arch_warmup_epochs {
            self.darts.val_stats(xv, yv)?
        } else {
            self.darts.arch_step(xt, yt, xv, yv, lr)?
        };
        let train = self.darts.weight_step(xt, yt, lr, None)?;
        Ok((train, val))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::optim::{Adam, Sgd};
    use crate::nets::supernet::{Build, Supernet, channel_shuffle, check_partial};
    use crate::space::{Overrides, Space};
    use crate::spec::Sources;
    use crate::spec::pipeline::Order;
    use candle_core::{DType, Device};

    fn space(channels: u32) -> Space {
        let mut sources = Sources::default();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let ov = Overrides {
            channels: Some((channels, Default::default())),
            layers: Some((3, Default::default())),
            input: Some(crate::spec::space::Input {
                channels: 3,
                size: 8,
                classes: 4,
            }),
        };
        crate::space::load(&mut sources, &root.join("schemas/darts.ron"), None, &ov).unwrap()
    }

    fn input() -> Tensor {
        let v: Vec<f64> = (0..2 * 3 * 8 * 8)
            .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
            .collect();
        Tensor::from_vec(v, (2, 3, 8, 8), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Output channel j·g + i is input channel i·(C/g) + j; every channel appears once.
    #[test]
    fn channel_shuffle_is_a_permutation() {
        let (c, g) = (12usize, 4usize);
        let x = Tensor::arange(0f32, c as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, c, 1, 1))
            .unwrap()
            .broadcast_as((2, c, 3, 3))
            .unwrap()
            .contiguous()
            .unwrap();
        let y = channel_shuffle(&x, g).unwrap();
        assert_eq!(y.dims(), x.dims());
        let got: Vec<f32> = y.get(1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let order: Vec<usize> = (0..c).map(|o| got[o * 9] as usize).collect();
        let want: Vec<usize> = (0..c).map(|o| (o % g) * (c / g) + o / g).collect();
        assert_eq!(order, want);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..c).collect::<Vec<_>>());
        assert!(channel_shuffle(&x, 5).is_err());
    }

    /// K = 1 without edge normalisation is DARTS: the same parameters and the same output.
    #[test]
    fn k1_without_edge_normalization_is_darts() {
        let s = space(4);
        let darts = Supernet::with_dtype(&s, &Device::Cpu, DType::F64, 7).unwrap();
        let pc = Supernet::with_build(&s, &Device::Cpu, DType::F64, 7, Build::default()).unwrap();
        let x = input();
        let (a, b) = (
            darts.forward(&x, true).unwrap(),
            pc.forward(&x, true).unwrap(),
        );
        assert_eq!(max_diff(&a, &b), 0.0);
        assert_eq!(darts.weights.param_count(), pc.weights.param_count());
    }

    /// With K = 4 the ops are a quarter as wide, the output keeps its shape, β appear in
    /// the alphas store and every α and β gets a gradient.
    #[test]
    fn partial_channels_shapes_and_gradients() {
        let s = space(8);
        let build = Build {
            partial_channels: 4,
            edge_normalization: true,
        };
        let net = Supernet::with_build(&s, &Device::Cpu, DType::F64, 1, build).unwrap();
        let full = Supernet::with_dtype(&s, &Device::Cpu, DType::F64, 1).unwrap();
        assert!(net.weights.param_count() < full.weights.param_count() / 4);
        let names: Vec<String> = net.alphas.params().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"betas.normal".to_string()), "{names:?}");
        let y = net.forward(&input(), true).unwrap();
        assert_eq!(y.dims(), &[2, 4]);
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (n, v) in net.alphas.params() {
            let gv = g.get(v.as_tensor()).unwrap();
            let nz = gv.abs().unwrap().flatten_all().unwrap().min(0).unwrap();
            assert!(nz.to_scalar::<f64>().unwrap() > 0.0, "{n}: a zero gradient");
        }
        // The derivation weights are softmax(α) × the edge softmax of β: each node's rows
        // sum to 1 over its incoming edges.
        let w = net.cell_weights().unwrap();
        let w = w[0].as_ref().unwrap();
        let cell = &s.cells[0];
        for node in cell.inputs..cell.states() {
            let sum: f32 = cell.incoming(node).map(|e| w[e].iter().sum::<f32>()).sum();
            assert!((sum - 1.0).abs() < 1e-5, "node {node}: {sum}");
        }
    }

    /// Widths that do not split into K parts, or whose parts an op cannot take, are refused.
    #[test]
    fn widths_must_divide_by_k() {
        assert!(check_partial(&space(8), 4).is_ok());
        let e = check_partial(&space(6), 4).unwrap_err();
        assert!(
            format!("{e:?}").contains("not a multiple of k = 4"),
            "{e:?}"
        );
        let e = check_partial(&space(8), 3).unwrap_err();
        assert!(format!("{e:?}").contains("8 channels wide"), "{e:?}");
        assert!(check_partial(&space(8), 8).is_ok());
    }

    /// During the warm-up the architecture weights stay put; afterwards they move.
    #[test]
    fn alphas_frozen_during_warmup() {
        let s = space(8);
        let build = Build {
            partial_channels: 4,
            edge_normalization: true,
        };
        let net = Supernet::with_build(&s, &Device::Cpu, DType::F32, 2, build).unwrap();
        let w = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
        let a = Adam::new(net.alphas.params(), 3e-2, (0.5, 0.999), 1e-3);
        let mut pc = PcDarts {
            darts: Darts::new(net, w, a, Order::First),
            arch_warmup_epochs: 1,
        };
        let x = input().to_dtype(DType::F32).unwrap();
        let y = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
        let alphas = |pc: &PcDarts| -> Vec<f32> {
            pc.darts
                .net
                .alphas
                .params()
                .iter()
                .flat_map(|(_, v)| {
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect()
        };
        let before = alphas(&pc);
        let buffers = |pc: &PcDarts| -> Vec<f32> {
            pc.darts
                .net
                .weights
                .buffers()
                .iter()
                .flat_map(|(_, v)| {
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                })
                .collect()
        };
        let b0 = buffers(&pc);
        let val = pc.darts.val_stats(&x, &y).unwrap();
        assert!(val.loss.is_finite());
        assert_eq!(
            buffers(&pc),
            b0,
            "scoring the validation batch moved BN statistics"
        );
        pc.step(&x, &y, &x, &y, 0.05, 0).unwrap();
        assert_eq!(alphas(&pc), before);
        pc.step(&x, &y, &x, &y, 0.05, 1).unwrap();
        assert_ne!(alphas(&pc), before);
    }
}
