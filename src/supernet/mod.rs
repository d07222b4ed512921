//! The weight-sharing network: Candle modules built from a compiled [`Space`].
//!
//! Owns the modules of every layer of the skeleton (stem, cells, searchable layers, residual
//! blocks, head), the mixed edges (Σₖ softmax(α)ₖ · opₖ(x) over the cell's candidates,
//! motifs recursively with their own α), and the two stores: `weights` (ops, BN buffers)
//! and `alphas` (one [edges × candidates] matrix per cell type, named `cells.<name>`, and
//! one vector per searchable layer, named `layers.<slot>`). No search policy here.
//!
//! Parameter names are `layers.<i>.` followed by the part's path, e.g.
//! `layers.3.edges.1.sep_conv_3x3.1.dw.weight`.

use candle_core::{D, Device, Result, Tensor};

use crate::blocks::{ConvBn, Linear, Preprocess, Residual};
use crate::nn::{BatchNorm, Init, Scope, Store};
use crate::ops::{OpModule, kernels};
use crate::space::{Candidate, LayerKind, Space};

/// Initial architecture weights: 1e-3 · N(0, 1), as in DARTS.
pub const ALPHA_INIT_STD: f64 = 1e-3;

/// The weight-sharing network.
pub struct Supernet {
    pub space: Space,
    /// Op weights and BN running statistics.
    pub weights: Store,
    /// Architecture weights.
    pub alphas: Store,
    layers: Vec<Layer>,
    /// Per cell type: its α matrix [edges, candidates] (cells not in use have none).
    cell_alphas: Vec<Option<Tensor>>,
    /// Per searchable layer: its α vector [candidates].
    slot_alphas: Vec<Tensor>,
}

enum Layer {
    ConvBn(ConvBn),
    Cell(Cell),
    Choice { slot: usize, edge: Mixed },
    Residual(Residual),
    BnRelu(BatchNorm),
    Head(Linear),
}

/// A cell instance: preprocessing per input, then a mixed edge per cell edge.
struct Cell {
    cell: usize,
    pre: Vec<Option<Preprocess>>,
    edges: Vec<Mixed>,
}

/// Every candidate of one edge, in the cell's candidate order.
struct Mixed {
    cands: Vec<Cand>,
}

enum Cand {
    Op(OpModule),
    Cell(Box<Cell>),
}

impl Supernet {
    /// Builds the network for `space` on `device`; weights and alphas start from `seed`.
    pub fn new(space: &Space, device: &Device, seed: u64) -> Result<Supernet> {
        Supernet::with_dtype(space, device, crate::nn::DTYPE, seed)
    }

    /// The network with parameters of `dtype` (F64 for gradient checks).
    pub fn with_dtype(
        space: &Space,
        device: &Device,
        dtype: candle_core::DType,
        seed: u64,
    ) -> Result<Supernet> {
        let weights = Store::with_dtype(device, dtype, seed);
        let alphas = Store::with_dtype(device, dtype, seed ^ 0xA1FA_A1FA_A1FA_A1FA);
        let used = space.used_cells();
        let mut cell_alphas = Vec::new();
        for (c, cell) in space.cells.iter().enumerate() {
            cell_alphas.push(if used[c] {
                let shape = [cell.edges.len(), cell.candidates.len()];
                Some(alphas.root().pp("cells").param(
                    &cell.name,
                    &shape,
                    Init::Normal(ALPHA_INIT_STD),
                )?)
            } else {
                None
            });
        }
        let mut slot_alphas = Vec::new();
        for (i, slot) in space.slots.iter().enumerate() {
            slot_alphas.push(alphas.root().pp("layers").param(
                &i.to_string(),
                &[slot.candidates.len()],
                Init::Normal(ALPHA_INIT_STD),
            )?);
        }
        let root = weights.root().pp("layers");
        let mut layers = Vec::new();
        for (i, l) in space.network.layers.iter().enumerate() {
            let s = root.pp(i);
            let input = l.input_shapes[0];
            let (c_in, c_out) = (input.c as usize, l.output.c as usize);
            layers.push(match &l.kind {
                LayerKind::ConvBn {
                    kernel,
                    stride,
                    act,
                } => Layer::ConvBn(ConvBn::new(
                    &s,
                    c_in,
                    c_out,
                    *kernel as usize,
                    *stride as usize,
                    *act,
                )?),
                LayerKind::Cell {
                    cell,
                    width,
                    stride,
                    pre,
                } => {
                    let mut pres = Vec::new();
                    for (k, (p, shape)) in pre.iter().zip(&l.input_shapes).enumerate() {
                        pres.push(Preprocess::new(
                            &s.pp(format!("pre{k}")),
                            *p,
                            shape.c as usize,
                            *width as usize,
                            space.supernet.affine,
                        )?);
                    }
                    let inputs: Vec<usize> = (0..pre.len()).map(|_| *width as usize).collect();
                    Layer::Cell(build_cell(
                        space,
                        &s,
                        *cell,
                        &inputs,
                        *width as usize,
                        *stride as usize,
                        pres,
                    )?)
                }
                LayerKind::Choice { slot, stride } => Layer::Choice {
                    slot: *slot,
                    edge: build_mixed(
                        space,
                        &s,
                        &space.slots[*slot].candidates,
                        c_in,
                        c_out,
                        *stride as usize,
                    )?,
                },
                LayerKind::Residual { stride } => {
                    Layer::Residual(Residual::new(&s, c_in, c_out, *stride as usize)?)
                }
                LayerKind::BnRelu => Layer::BnRelu(BatchNorm::new(&s.pp("bn"), c_in, true)?),
                LayerKind::Head => Layer::Head(Linear::new(&s, c_in, c_out)?),
            });
        }
        Ok(Supernet {
            space: space.clone(),
            weights,
            alphas,
            layers,
            cell_alphas,
            slot_alphas,
        })
    }

    /// Logits for a batch.
    ///
    /// # Shapes
    /// `x`: [N, C, H, W] (the space's input) → [N, classes].
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_to(x, train, self.layers.len() - 1)
    }

    /// The output of layer `last` (inclusive) of the skeleton.
    pub fn forward_to(&self, x: &Tensor, train: bool, last: usize) -> Result<Tensor> {
        let probs: Vec<Option<Tensor>> = self
            .cell_alphas
            .iter()
            .map(|a| {
                a.as_ref()
                    .map(|a| candle_nn::ops::softmax(a, D::Minus1))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate().take(last + 1) {
            let spec = &self.space.network.layers[i];
            let input = |k: usize| -> Tensor {
                spec.inputs
                    .get(k)
                    .map_or_else(|| x.clone(), |&j| outs[j].clone())
            };
            let y = match layer {
                Layer::ConvBn(m) => m.forward(&input(0), train)?,
                Layer::Cell(c) => {
                    let inputs: Vec<Tensor> = (0..c.pre.len()).map(input).collect();
                    self.cell_forward(c, inputs, &probs, train)?
                }
                Layer::Choice { slot, edge } => {
                    let p = candle_nn::ops::softmax(&self.slot_alphas[*slot], D::Minus1)?;
                    self.mixed_forward(edge, &input(0), &p, &probs, train)?
                }
                Layer::Residual(r) => r.forward(&input(0), train)?,
                Layer::BnRelu(bn) => kernels::relu(&bn.forward(&input(0), train)?)?,
                Layer::Head(h) => h.forward_pooled(&input(0))?,
            };
            outs.push(y);
        }
        outs.pop()
            .ok_or_else(|| candle_core::Error::Msg("the network has no layers".into()))
    }

    fn cell_forward(
        &self,
        c: &Cell,
        inputs: Vec<Tensor>,
        probs: &[Option<Tensor>],
        train: bool,
    ) -> Result<Tensor> {
        let cell = &self.space.cells[c.cell];
        let mut states: Vec<Option<Tensor>> = vec![None; cell.states()];
        for (k, (x, p)) in inputs.into_iter().zip(&c.pre).enumerate() {
            states[k] = Some(match p {
                None => x,
                Some(m) => m.forward(&x, train)?,
            });
        }
        let p = probs[c.cell]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg(format!("cell {} has no alphas", cell.name)))?;
        for &node in &cell.order {
            let mut sum: Option<Tensor> = None;
            for e in cell.incoming(node) {
                let from = states[cell.edges[e].from].as_ref().ok_or_else(|| {
                    candle_core::Error::Msg("state used before it is computed".into())
                })?;
                let y = self.mixed_forward(&c.edges[e], from, &p.get(e)?, probs, train)?;
                sum = Some(match sum {
                    None => y,
                    Some(s) => (s + y)?,
                });
            }
            states[node] = sum;
        }
        let outs: Vec<Tensor> = cell
            .output_states()
            .iter()
            .filter_map(|&s| states[s].clone())
            .collect();
        if outs.len() == 1 {
            Ok(outs[0].clone())
        } else {
            Tensor::cat(&outs, 1)
        }
    }

    /// Σₖ pₖ · candₖ(x). A `none` candidate adds nothing (its output is zeros) and is not
    /// run; its α still gets its gradient through the softmax of the others. The candidates
    /// that begin with a ReLU share one `relu(x)`.
    fn mixed_forward(
        &self,
        m: &Mixed,
        x: &Tensor,
        p: &Tensor,
        probs: &[Option<Tensor>],
        train: bool,
    ) -> Result<Tensor> {
        let mut ys = Vec::with_capacity(m.cands.len());
        let mut ks = Vec::with_capacity(m.cands.len());
        let mut relu: Option<Tensor> = None;
        for (k, cand) in m.cands.iter().enumerate() {
            ys.push(match cand {
                Cand::Op(OpModule::Zero { .. }) => continue,
                Cand::Op(op) if op.starts_with_relu() => {
                    let r = match &relu {
                        Some(r) => r,
                        None => relu.insert(kernels::relu(x)?),
                    };
                    op.forward_after_relu(r, train)?
                }
                Cand::Op(op) => op.forward(x, train)?,
                Cand::Cell(c) => self.cell_forward(c, vec![x.clone()], probs, train)?,
            });
            ks.push(k);
        }
        if ys.is_empty() {
            // Every candidate is `none`.
            return match m.cands.first() {
                Some(Cand::Op(op)) => op.forward(x, train)?.broadcast_mul(&p.get(0)?),
                _ => Err(candle_core::Error::Msg(
                    "a mixed edge has no candidates".into(),
                )),
            };
        }
        kernels::weighted_sum(&ys, p, &ks)
    }

    /// Softmax of each cell type's alphas ([edges, candidates]), by cell index.
    pub fn cell_weights(&self) -> Result<Vec<Option<Vec<Vec<f32>>>>> {
        self.cell_alphas
            .iter()
            .map(|a| {
                a.as_ref()
                    .map(|a| candle_nn::ops::softmax(a, D::Minus1)?.to_vec2::<f32>())
                    .transpose()
            })
            .collect()
    }

    /// Softmax of each searchable layer's alphas.
    pub fn slot_weights(&self) -> Result<Vec<Vec<f32>>> {
        self.slot_alphas
            .iter()
            .map(|a| candle_nn::ops::softmax(a, D::Minus1)?.to_vec1::<f32>())
            .collect()
    }
}

fn build_mixed(
    space: &Space,
    s: &Scope,
    cands: &[Candidate],
    c_in: usize,
    c_out: usize,
    stride: usize,
) -> Result<Mixed> {
    let mut out = Vec::new();
    for &c in cands {
        let name = space.candidate_name(c);
        out.push(match c {
            Candidate::Op(o) => {
                Cand::Op(
                    space.ops[o]
                        .1
                        .build(&s.pp(name), c_in, c_out, stride, space.supernet)?,
                )
            }
            Candidate::Cell(m) => {
                let width = c_out / space.cells[m].multiplier() as usize;
                Cand::Cell(Box::new(build_cell(
                    space,
                    &s.pp(name),
                    m,
                    &[c_in],
                    width,
                    stride,
                    vec![None],
                )?))
            }
        });
    }
    Ok(Mixed { cands: out })
}

/// A cell whose inputs (after `pre`) have `inputs` channels, nodes `width` wide.
fn build_cell(
    space: &Space,
    s: &Scope,
    ci: usize,
    inputs: &[usize],
    width: usize,
    stride: usize,
    pre: Vec<Option<Preprocess>>,
) -> Result<Cell> {
    let cell = &space.cells[ci];
    let mut channels: Vec<usize> = inputs.to_vec();
    channels.resize(cell.states(), width);
    let mut edges = Vec::new();
    for (e, edge) in cell.edges.iter().enumerate() {
        let st = if edge.from < cell.inputs { stride } else { 1 };
        edges.push(build_mixed(
            space,
            &s.pp("edges").pp(e),
            &cell.candidates,
            channels[edge.from],
            width,
            st,
        )?);
    }
    Ok(Cell {
        cell: ci,
        pre,
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Overrides;
    use crate::spec::Sources;

    fn space(file: &str, ov: Overrides) -> Space {
        let mut sources = Sources::default();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        crate::space::load(&mut sources, &root.join(file), None, &ov).unwrap()
    }

    /// The Candle network has exactly the parameters the space module counts.
    #[test]
    fn parameter_counts_match_the_space() {
        for (file, c, l) in [
            ("schemas/darts.ron", 4, 5),
            ("schemas/nas-bench-201.ron", 8, 1),
            ("schemas/mobilenet-chain.ron", 8, 1),
        ] {
            let ov = Overrides {
                channels: if file.contains("darts") {
                    Some((c, Default::default()))
                } else {
                    None
                },
                layers: if file.contains("darts") {
                    Some((l, Default::default()))
                } else {
                    None
                },
                input: Some(crate::spec::space::Input {
                    channels: 3,
                    size: 16,
                    classes: 10,
                }),
            };
            let s = space(file, ov);
            let net = Supernet::new(&s, &Device::Cpu, 0).unwrap();
            assert_eq!(
                net.weights.param_count() as u64,
                s.supernet_cost().params,
                "{file}"
            );
            assert_eq!(net.alphas.param_count(), s.alphas(), "{file}");
            let x = Tensor::randn(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
            let y = net.forward(&x, true).unwrap();
            assert_eq!(y.dims(), &[2, 10], "{file}");
        }
    }
}
