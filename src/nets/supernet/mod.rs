//! The weight-sharing network: Candle modules built from a compiled [`Space`].
//!
//! Owns the modules of every layer of the skeleton (stem, cells, searchable layers, residual
//! blocks, head), the mixed edges (Σₖ wₖ · opₖ(x) over the cell's candidates, motifs
//! recursively with their own α), and the two stores: `weights` (ops, BN buffers) and
//! `alphas` (one [edges × candidates] matrix per cell type, named `cells.<name>`, one vector
//! per searchable layer, named `layers.<slot>`, and with edge normalisation one [edges]
//! vector β per cell type, named `betas.<name>`). No search policy here: a forward takes its
//! candidate weights as an [`Arch`] ([`Supernet::relaxed`] is DARTS's softmax; GDAS builds
//! sampled ones).
//!
//! PC-DARTS's partial channels ([`Build::partial_channels`] = K): every cell edge's ops are
//! built at C/K channels; the first C/K input channels go through the weighted op sum, the
//! other (K−1)·C/K bypass it (through a 2×2 max pool, stride 2, on stride-2 edges); the
//! result is (processed, bypass) concatenated and shuffled in K groups
//! ([`channel_shuffle`]). Needs a space [`check_partial`] accepts.
//!
//! Parameter names are `layers.<i>.` followed by the part's path, e.g.
//! `layers.3.edges.1.sep_conv_3x3.1.dw.weight`.

use candle_core::{D, Device, Result, Tensor};

use crate::kernels;
use crate::nets::blocks::{
    ConvBn, Linear, Preprocess, Residual, accumulate, concat_states, preprocess_inputs,
};
use crate::nn::{BatchNorm, Init, Scope, Store};
use crate::ops::OpModule;
use crate::space::walk::{self, Keep};
use crate::space::{Candidate, LayerKind, Space, eval};

/// Initial architecture weights: 1e-3 · N(0, 1), as in DARTS (β too, as in PC-DARTS).
pub const ALPHA_INIT_STD: f64 = 1e-3;

/// How the network is built beyond the space: PC-DARTS's options. The default is DARTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    /// K: cell edges run their ops on 1/K of the channels (1: all of them).
    pub partial_channels: usize,
    /// One β per cell edge, softmaxed over each node's incoming edges, scales the edge.
    pub edge_normalization: bool,
}

impl Default for Build {
    fn default() -> Build {
        Build {
            partial_channels: 1,
            edge_normalization: false,
        }
    }
}

/// The candidate weights of one forward pass.
pub struct Arch {
    /// Per cell type: [edges, candidates], the weight of each candidate's output (cells not
    /// in use have none).
    pub cells: Vec<Option<Tensor>>,
    /// Per cell type: the one candidate each edge runs; `None`: every candidate runs.
    pub cell_picks: Vec<Option<Vec<usize>>>,
    /// Per searchable layer: [candidates].
    pub slots: Vec<Tensor>,
    /// Per searchable layer: the one candidate it runs; `None`: all of them.
    pub slot_picks: Vec<Option<usize>>,
    /// Per cell type: [edges], the scale of each edge's output (edge normalisation).
    pub edges: Vec<Option<Tensor>>,
}

/// Why PC-DARTS's partial channels cannot run on a space: the space's shape, or the
/// channel factor K.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialError {
    Space(String),
    K(String),
}

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
    /// Per cell type: its β vector [edges] (edge normalisation only).
    cell_betas: Vec<Option<Tensor>>,
    build: Build,
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
    stride: usize,
    /// K of partial channels (1: the ops see every channel).
    partial: usize,
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
        Supernet::with_build(space, device, dtype, seed, Build::default())
    }

    /// The network with PC-DARTS's options. With `Build::default()` this is
    /// [`Supernet::with_dtype`]; β are created after every α, so α start the same either way.
    pub fn with_build(
        space: &Space,
        device: &Device,
        dtype: candle_core::DType,
        seed: u64,
        build: Build,
    ) -> Result<Supernet> {
        if build.partial_channels != 1 {
            check_partial(space, build.partial_channels).map_err(|e| match e {
                PartialError::Space(m) | PartialError::K(m) => candle_core::Error::Msg(m),
            })?;
        }
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
        let mut cell_betas = Vec::new();
        for (c, cell) in space.cells.iter().enumerate() {
            cell_betas.push(if used[c] && build.edge_normalization {
                Some(alphas.root().pp("betas").param(
                    &cell.name,
                    &[cell.edges.len()],
                    Init::Normal(ALPHA_INIT_STD),
                )?)
            } else {
                None
            });
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
                        build.partial_channels,
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
                        1,
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
            cell_betas,
            build,
        })
    }

    /// How the network was built.
    pub fn build(&self) -> Build {
        self.build
    }

    /// Per cell type: its α [edges, candidates] (cells not in use have none).
    pub fn cell_alphas(&self) -> &[Option<Tensor>] {
        &self.cell_alphas
    }

    /// Per searchable layer: its α [candidates].
    pub fn slot_alphas(&self) -> &[Tensor] {
        &self.slot_alphas
    }

    /// DARTS's continuous relaxation: softmax(α) on every edge and layer, every candidate
    /// runs; with edge normalisation each edge is scaled by [`Supernet::edge_scales`].
    pub fn relaxed(&self) -> Result<Arch> {
        let softmax = |a: &Tensor| candle_nn::ops::softmax(a, D::Minus1);
        Ok(Arch {
            cells: self
                .cell_alphas
                .iter()
                .map(|a| a.as_ref().map(softmax).transpose())
                .collect::<Result<_>>()?,
            cell_picks: vec![None; self.cell_alphas.len()],
            slots: self
                .slot_alphas
                .iter()
                .map(softmax)
                .collect::<Result<_>>()?,
            slot_picks: vec![None; self.slot_alphas.len()],
            edges: self.edge_scales()?,
        })
    }

    /// Per cell type with edge normalisation: softmax of β over each node's incoming edges,
    /// [edges] in edge order.
    pub fn edge_scales(&self) -> Result<Vec<Option<Tensor>>> {
        self.cell_betas
            .iter()
            .zip(&self.space.cells)
            .map(|(b, cell)| {
                b.as_ref()
                    .map(|b| {
                        let mut order = Vec::with_capacity(cell.edges.len());
                        let mut parts = Vec::new();
                        for node in cell.inputs..cell.states() {
                            let inc: Vec<u32> = cell.incoming(node).map(|e| e as u32).collect();
                            if inc.is_empty() {
                                continue;
                            }
                            let idx = Tensor::new(inc.as_slice(), b.device())?;
                            parts.push(candle_nn::ops::softmax(&b.index_select(&idx, 0)?, 0)?);
                            order.extend(inc);
                        }
                        // Back to edge order: position of each edge in `order`.
                        let mut back = vec![0u32; order.len()];
                        for (pos, &e) in order.iter().enumerate() {
                            back[e as usize] = pos as u32;
                        }
                        let back = Tensor::new(back.as_slice(), b.device())?;
                        Tensor::cat(&parts, 0)?.index_select(&back, 0)
                    })
                    .transpose()
            })
            .collect()
    }

    /// Logits for a batch under DARTS's relaxation ([`Supernet::relaxed`]).
    ///
    /// # Shapes
    /// `x`: [N, C, H, W] (the space's input) → [N, classes].
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, &self.relaxed()?)
    }

    /// Logits for a batch with the candidate weights of `arch`.
    pub fn forward_with(&self, x: &Tensor, train: bool, arch: &Arch) -> Result<Tensor> {
        self.forward_to_with(x, train, self.layers.len() - 1, arch)
    }

    /// The output of layer `last` (inclusive) of the skeleton.
    pub fn forward_to(&self, x: &Tensor, train: bool, last: usize) -> Result<Tensor> {
        self.forward_to_with(x, train, last, &self.relaxed()?)
    }

    fn forward_to_with(&self, x: &Tensor, train: bool, last: usize, arch: &Arch) -> Result<Tensor> {
        let reads = self.space.network.reads();
        let upto = reads.len().min(last + 1);
        walk::layers(&reads[..upto], x.clone(), Keep::All, |i, inputs| {
            self.layer_forward(i, inputs, arch, train)
        })
    }

    /// Layer `i` on its inputs.
    fn layer_forward(
        &self,
        i: usize,
        inputs: Vec<Tensor>,
        arch: &Arch,
        train: bool,
    ) -> Result<Tensor> {
        Ok(match &self.layers[i] {
            Layer::ConvBn(m) => m.forward(&inputs[0], train)?,
            Layer::Cell(c) => self.cell_forward(c, inputs, arch, train)?,
            Layer::Choice { slot, edge } => self.mixed_forward(
                edge,
                &inputs[0],
                &arch.slots[*slot],
                arch.slot_picks[*slot],
                arch,
                train,
            )?,
            Layer::Residual(r) => r.forward(&inputs[0], train)?,
            Layer::BnRelu(bn) => bn.forward_relu(&inputs[0], train)?,
            Layer::Head(h) => h.forward_pooled(&inputs[0])?,
        })
    }

    /// The cell on its inputs: each node the sum of its mixed edges (each scaled by its β
    /// with edge normalisation).
    fn cell_forward(
        &self,
        c: &Cell,
        inputs: Vec<Tensor>,
        arch: &Arch,
        train: bool,
    ) -> Result<Tensor> {
        let cell = &self.space.cells[c.cell];
        let inputs = preprocess_inputs(&c.pre, inputs, train)?;
        let p = arch.cells[c.cell]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg(format!("cell {} has no alphas", cell.name)))?;
        let picks = arch.cell_picks[c.cell].as_deref();
        let scales = arch.edges.get(c.cell).and_then(Option::as_ref);
        let states = walk::cell(
            &mut (),
            cell.dag(),
            inputs,
            |_, sum, e, x| {
                let pick = picks.map(|p| p[e]);
                let mut y = self.edge_forward(&c.edges[e], x, &p.get(e)?, pick, arch, train)?;
                if let Some(b) = scales {
                    y = y.broadcast_mul(&b.get(e)?)?;
                }
                accumulate(sum, y)
            },
            |_, _, sum| sum.ok_or_else(|| candle_core::Error::Msg("a node without edges".into())),
        )?;
        concat_states(&states, &cell.output_states())
    }

    /// A cell edge: [`Supernet::mixed_forward`], on the first C/K channels with partial
    /// channels (the rest bypass it, then [`channel_shuffle`] in K groups).
    fn edge_forward(
        &self,
        m: &Mixed,
        x: &Tensor,
        p: &Tensor,
        pick: Option<usize>,
        arch: &Arch,
        train: bool,
    ) -> Result<Tensor> {
        let k = m.partial;
        if k == 1 {
            return self.mixed_forward(m, x, p, pick, arch, train);
        }
        let c = x.dim(1)?;
        let part = c / k;
        let a = x.narrow(1, 0, part)?.contiguous()?;
        let b = x.narrow(1, part, c - part)?.contiguous()?;
        let y = self.mixed_forward(m, &a, p, pick, arch, train)?;
        let b = if m.stride == 2 {
            b.max_pool2d_with_stride(2, 2)?
        } else {
            b
        };
        channel_shuffle(&Tensor::cat(&[y, b], 1)?, k)
    }

    /// Σₖ pₖ · candₖ(x). A `none` candidate adds nothing (its output is zeros) and is not
    /// run; its α still gets its gradient through the softmax of the others. The candidates
    /// that begin with a ReLU share one `relu(x)`. With `pick`, only that candidate runs:
    /// p_pick · cand_pick(x).
    fn mixed_forward(
        &self,
        m: &Mixed,
        x: &Tensor,
        p: &Tensor,
        pick: Option<usize>,
        arch: &Arch,
        train: bool,
    ) -> Result<Tensor> {
        if let Some(k) = pick {
            let y = match m.cands.get(k) {
                Some(Cand::Op(op)) => op.forward(x, train)?,
                Some(Cand::Cell(c)) => self.cell_forward(c, vec![x.clone()], arch, train)?,
                None => candle_core::bail!("candidate {k} of {} picked", m.cands.len()),
            };
            return kernels::weighted_sum(&[y], p, &[k]);
        }
        let mut ys = Vec::with_capacity(m.cands.len());
        let mut ks = Vec::with_capacity(m.cands.len());
        let mut relu: Option<Tensor> = None;
        for (k, cand) in m.cands.iter().enumerate() {
            ys.push(match cand {
                Cand::Op(OpModule::Zero(_)) => continue,
                Cand::Op(op) if op.starts_with_relu() => {
                    let r = match &relu {
                        Some(r) => r,
                        None => relu.insert(kernels::relu(x)?),
                    };
                    op.forward_after_relu(r, train)?
                }
                Cand::Op(op) => op.forward(x, train)?,
                Cand::Cell(c) => self.cell_forward(c, vec![x.clone()], arch, train)?,
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

    /// The weights the genotype is derived from, per cell type [edges, candidates], by
    /// cell index: softmax(α), times the edge's [`Supernet::edge_scales`] value with edge
    /// normalisation (PC-DARTS).
    pub fn cell_weights(&self) -> Result<Vec<Option<Vec<Vec<f32>>>>> {
        let scales = self.edge_scales()?;
        self.cell_alphas
            .iter()
            .zip(&scales)
            .map(|(a, s)| {
                a.as_ref()
                    .map(|a| {
                        let w = candle_nn::ops::softmax(a, D::Minus1)?;
                        match s {
                            Some(s) => w.broadcast_mul(&s.unsqueeze(1)?)?,
                            None => w,
                        }
                        .to_dtype(candle_core::DType::F32)?
                        .to_vec2::<f32>()
                    })
                    .transpose()
            })
            .collect()
    }

    /// [`Supernet::edge_scales`] as numbers, for cell types with edge normalisation.
    pub fn edge_weights(&self) -> Result<Vec<Option<Vec<f32>>>> {
        self.edge_scales()?
            .into_iter()
            .map(|s| {
                s.map(|s| s.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>())
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

/// Channel shuffle in `groups` groups: output channel `j·groups + g` is input channel
/// `g·(C/groups) + j`.
///
/// # Shapes
/// [N, C, H, W] → [N, C, H, W], C a multiple of `groups`.
pub fn channel_shuffle(x: &Tensor, groups: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if groups == 0 || !c.is_multiple_of(groups) {
        candle_core::bail!("channel_shuffle: {c} channels do not split into {groups} groups");
    }
    x.reshape((n, groups, c / groups, h, w))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n, c, h, w))
}

/// Whether PC-DARTS's partial channels with factor `k` can run on `space`: only cells of op
/// candidates (no motifs, no searchable layers); every cell width a multiple of `k`; every
/// candidate valid at width/k; every op output the size of the bypass (on stride-2 edges,
/// an even input size).
pub fn check_partial(space: &Space, k: usize) -> std::result::Result<(), PartialError> {
    if !space.slots.is_empty() {
        return Err(PartialError::Space(format!(
            "PC-DARTS works on cells; space \"{}\" has {} searchable layers",
            space.name,
            space.slots.len()
        )));
    }
    for (ci, cell) in space.cells.iter().enumerate() {
        if !space.used_cells()[ci] {
            continue;
        }
        if let Some(&m) = cell
            .candidates
            .iter()
            .find(|c| matches!(c, Candidate::Cell(_)))
        {
            return Err(PartialError::Space(format!(
                "PC-DARTS needs op candidates; cell \"{}\" has the motif \"{}\" as a candidate",
                cell.name,
                space.candidate_name(m)
            )));
        }
    }
    for (i, l) in space.cell_layers() {
        let LayerKind::Cell {
            cell: ci,
            width,
            stride,
            ..
        } = &l.kind
        else {
            continue;
        };
        let cell = &space.cells[*ci];
        if !width.is_multiple_of(k as u64) {
            return Err(PartialError::K(format!(
                "PC-DARTS: layer {i} (cell \"{}\") is {width} channels wide, not a multiple of k = {k}",
                cell.name
            )));
        }
        let part = width / k as u64;
        let inputs = l
            .shapes(space.supernet)
            .map_err(PartialError::Space)?
            .states;
        let states = eval::infer_cell(&space.ops, &space.cells, *ci, &inputs, *width, *stride)
            .map_err(PartialError::Space)?;
        for edge in &cell.edges {
            let st = if edge.from < cell.inputs { *stride } else { 1 };
            let input = states[edge.from];
            let bypass = if st == 2 {
                (input.h / 2, input.w / 2)
            } else {
                (input.h, input.w)
            };
            for &c in &cell.candidates {
                let Candidate::Op(o) = c else { continue };
                let ctx = crate::ops::OpCtx {
                    input: crate::ops::Shape { c: part, ..input },
                    c_out: part,
                    stride: st,
                    bn: space.supernet,
                };
                let out = space.ops[o].1.apply(&ctx).map_err(|m| {
                    PartialError::K(format!(
                        "PC-DARTS at k = {k}: \"{}\" on layer {i} (cell \"{}\", {part} of {width} channels): {m}",
                        space.ops[o].0, cell.name
                    ))
                })?;
                if (out.output.h, out.output.w) != bypass {
                    return Err(PartialError::Space(format!(
                        "PC-DARTS: layer {i} (cell \"{}\"): on a stride-2 edge the bypass's 2×2 max pool gives {}x{} but \"{}\" gives {}x{}; PC-DARTS needs even sizes there",
                        cell.name, bypass.0, bypass.1, space.ops[o].0, out.output.h, out.output.w
                    )));
                }
            }
        }
    }
    Ok(())
}

fn build_mixed(
    space: &Space,
    s: &Scope,
    cands: &[Candidate],
    c_in: usize,
    c_out: usize,
    stride: usize,
    partial: usize,
) -> Result<Mixed> {
    let (c_in, c_out) = (c_in / partial, c_out / partial);
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
                    1,
                )?))
            }
        });
    }
    Ok(Mixed {
        cands: out,
        stride,
        partial,
    })
}

/// A cell whose inputs (after `pre`) have `inputs` channels, nodes `width` wide; its edges
/// with partial channels `partial` (1: none).
#[allow(clippy::too_many_arguments)]
fn build_cell(
    space: &Space,
    s: &Scope,
    ci: usize,
    inputs: &[usize],
    width: usize,
    stride: usize,
    pre: Vec<Option<Preprocess>>,
    partial: usize,
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
            partial,
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

    /// A PC-DARTS edge by hand: Σₖ pₖ · opₖ on the first C/K channels (each op run on its
    /// own), the rest bypassing (2×2 max pool on a stride-2 edge), concatenated, and channel
    /// `o` of the result taken from channel (o mod K)·(C/K) + o div K.
    #[test]
    fn partial_channel_edge_by_hand() {
        let ov = Overrides {
            channels: Some((4, Default::default())),
            layers: Some((3, Default::default())),
            input: Some(crate::spec::space::Input {
                channels: 3,
                size: 8,
                classes: 4,
            }),
        };
        let s = space("schemas/darts.ron", ov);
        let k = 2;
        let build = Build {
            partial_channels: k,
            edge_normalization: true,
        };
        let net =
            Supernet::with_build(&s, &Device::Cpu, candle_core::DType::F64, 4, build).unwrap();
        let arch = net.relaxed().unwrap();
        // Layer 2 is the first reduction cell, 8 channels wide; its edges are fed 4×4 here.
        let Layer::Cell(cell) = &net.layers[2] else {
            panic!("layer 2 is not a cell")
        };
        let ct = &s.cells[cell.cell];
        assert!(ct.reduction);
        let c = 8;
        let x = Tensor::randn(0f64, 1f64, (2, c, 4, 4), &Device::Cpu).unwrap();
        let p_all = arch.cells[cell.cell].as_ref().unwrap();
        // Edge 0 reads s0 (stride 2); edge 4 reads node 0 (stride 1).
        for (e, size) in [(0usize, 2usize), (4, 4)] {
            let m = &cell.edges[e];
            let p = p_all.get(e).unwrap();
            let got = net.edge_forward(m, &x, &p, None, &arch, true).unwrap();
            let xa = x.narrow(1, 0, c / k).unwrap();
            let xb = x.narrow(1, c / k, c - c / k).unwrap();
            let mut ya: Option<Tensor> = None;
            for (j, cand) in m.cands.iter().enumerate() {
                let Cand::Op(op) = cand else {
                    panic!("a motif")
                };
                let y = op
                    .forward(&xa.contiguous().unwrap(), true)
                    .unwrap()
                    .broadcast_mul(&p.get(j).unwrap())
                    .unwrap();
                ya = Some(match ya {
                    None => y,
                    Some(a) => (a + y).unwrap(),
                });
            }
            let yb = if size == 2 {
                xb.max_pool2d_with_stride(2, 2).unwrap()
            } else {
                xb
            };
            let cat = Tensor::cat(&[ya.unwrap(), yb], 1).unwrap();
            let idx: Vec<u32> = (0..c).map(|o| ((o % k) * (c / k) + o / k) as u32).collect();
            let want = cat
                .index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 1)
                .unwrap();
            assert_eq!(got.dims(), &[2, c, size, size]);
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(diff < 1e-12, "edge {e}: {diff}");
        }
    }
}
