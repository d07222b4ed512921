//! The final network: Candle modules built from a discrete [`Net`] (a space with one
//! architecture chosen), as retrained, evaluated and exported.
//!
//! Owns the modules of every layer (stem, cells with their chosen edges, searchable layers,
//! residual blocks, heads), drop path and the optional auxiliary head. BN is affine
//! everywhere and pools have no BN after them (`BnMode::FINAL`). Parameter names are those
//! of the weight-sharing network for the same op: `layers.<i>.pre<k>.…` for a cell input's
//! preprocessing, `layers.<i>.edges.<e>.<candidate>.…` for the op chosen on cell edge `e`,
//! `layers.<i>.<candidate>.…` for a searchable layer, `aux.…` for the auxiliary head.
//!
//! Training mode uses batch statistics in BN, applies drop path and computes the auxiliary
//! logits; evaluation mode does none of these and is deterministic.

use candle_core::{DType, Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::kernels;
use crate::nets::blocks::{
    AuxHead, ConvBn, Linear, Preprocess, Residual, aux_check, aux_params, concat_states,
    preprocess_inputs,
};
use crate::nn::{BatchNorm, Scope, Store};
use crate::ops::{BnMode, Op, OpModule, Pure, Shape};
use crate::space::discrete::{Net, NetCell, NetEdge, NetKind, NetOp};
use crate::space::walk::{self, Keep, WalkError};
use crate::space::{self as space, LayerKind, Space};

/// The final network.
pub struct Model {
    pub net: Net,
    /// Parameters and BN running statistics.
    pub store: Store,
    pub(crate) layers: Vec<Layer>,
    /// The auxiliary head and the layer whose output it reads.
    aux: Option<(usize, AuxHead)>,
}

pub(crate) enum Layer {
    ConvBn(ConvBn),
    Cell(Cell),
    Choice(Edge),
    Residual(Residual),
    BnRelu(BatchNorm),
    Head(Linear),
}

/// A cell with its chosen edges.
pub(crate) struct Cell {
    pub(crate) pre: Vec<Option<Preprocess>>,
    /// The chosen edges' ops, by edge index (the graph's edge order).
    pub(crate) edges: Vec<Edge>,
    /// Where each chosen edge runs, by the same index.
    pub(crate) links: Vec<space::Edge>,
    pub(crate) states: usize,
    pub(crate) order: Vec<usize>,
    pub(crate) outputs: Vec<usize>,
    /// Shapes of the states, for nodes whose every edge is `Zero`.
    pub(crate) shapes: Vec<Shape>,
}

pub(crate) enum Edge {
    /// `Zero`: contributes nothing (kept for its output shape).
    Zero,
    Op(OpModule),
    Cell(Box<Cell>),
}

/// How a forward pass runs.
pub enum Mode<'a> {
    /// Running BN statistics, no drop path, no auxiliary head: deterministic.
    Eval,
    /// Batch statistics (running statistics updated); drop path with probability
    /// `drop_path` (masks drawn from `rng`) on every cell op output except identities; the
    /// auxiliary logits when the model has the head.
    Train {
        drop_path: f64,
        rng: &'a mut ChaCha8Rng,
    },
    /// The network at initialisation for the zero-cost proxies: differentiable (nothing
    /// detached), no drop path, no auxiliary head; BN on batch statistics (running
    /// statistics updated) when `batch_stats`, else on its running statistics. With
    /// `relus`, every ReLU output the walk computes is appended, in walk order: each cell
    /// state's ReLU (once, before the ops that begin with one) and each BN-ReLU layer's.
    Probe {
        batch_stats: bool,
        relus: Option<&'a mut Vec<Tensor>>,
    },
}

impl Mode<'_> {
    /// BN normalises with the batch's statistics.
    fn batch_stats(&self) -> bool {
        match self {
            Mode::Eval => false,
            Mode::Train { .. } => true,
            Mode::Probe { batch_stats, .. } => *batch_stats,
        }
    }

    /// Records `relu`, a ReLU output, when the mode taps them.
    fn tap(&mut self, relu: &Tensor) {
        if let Mode::Probe {
            relus: Some(out), ..
        } = self
        {
            out.push(relu.clone());
        }
    }
}

/// A forward pass's outputs.
pub struct Output {
    /// [N, classes].
    pub logits: Tensor,
    /// [N, classes]; training mode only, when the model has an auxiliary head.
    pub aux: Option<Tensor>,
}

/// Where DARTS puts the auxiliary head: on the output of the last reduction cell (cell
/// 2·layers/3 of a DARTS network). Returns that layer's index and output shape, or why the
/// network cannot have the head.
pub fn aux_position(net: &Net) -> std::result::Result<(usize, Shape), String> {
    let reductions = net.layers.iter().map(|l| {
        (
            matches!(&l.kind, NetKind::Cell(c) if c.stride == 2),
            l.output,
        )
    });
    last_reduction(&net.space, reductions)
}

/// [`aux_position`] for a space's skeleton (the same for every architecture), checked when
/// a pipeline asks for the head.
pub fn aux_position_in(space: &Space) -> std::result::Result<(usize, Shape), String> {
    let reductions = space.network.layers.iter().map(|l| {
        (
            matches!(&l.kind, LayerKind::Cell { stride, .. } if *stride == 2),
            l.output,
        )
    });
    last_reduction(&space.name, reductions)
}

fn last_reduction(
    space: &str,
    layers: impl DoubleEndedIterator<Item = (bool, Shape)> + ExactSizeIterator,
) -> std::result::Result<(usize, Shape), String> {
    let (i, (_, out)) = layers
        .enumerate()
        .rev()
        .find(|(_, (r, _))| *r)
        .ok_or_else(|| {
            format!("space \"{space}\" has no reduction cell to put DARTS's auxiliary head on")
        })?;
    aux_check(out)?;
    Ok((i, out))
}

/// Parameters of the auxiliary head `net` would have (0 if it cannot have one).
pub fn aux_param_count(net: &Net) -> u64 {
    aux_position(net).map_or(0, |(_, s)| aux_params(s.c, net.input.classes as u64))
}

impl Model {
    /// Builds the network for `net` on `device`, parameters drawn from `seed`; with DARTS's
    /// auxiliary head when `auxiliary` (the network must accept it: [`aux_position`]).
    pub fn new(net: &Net, device: &Device, seed: u64, auxiliary: bool) -> Result<Model> {
        Model::with_dtype(net, device, crate::nn::DTYPE, seed, auxiliary)
    }

    /// The network with parameters of `dtype` (F64 for gradient checks).
    pub fn with_dtype(
        net: &Net,
        device: &Device,
        dtype: DType,
        seed: u64,
        auxiliary: bool,
    ) -> Result<Model> {
        let store = Store::with_dtype(device, dtype, seed);
        let root = store.root().pp("layers");
        let mut layers = Vec::new();
        for (i, l) in net.layers.iter().enumerate() {
            let s = root.pp(i);
            let (c_in, c_out) = (l.input_shapes[0].c as usize, l.output.c as usize);
            layers.push(match &l.kind {
                NetKind::ConvBn {
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
                NetKind::Cell(c) => {
                    let mut pre = Vec::new();
                    for (k, (p, shape)) in c.pre.iter().zip(&l.input_shapes).enumerate() {
                        pre.push(Preprocess::new(
                            &s.pp(format!("pre{k}")),
                            *p,
                            shape.c as usize,
                            c.width as usize,
                            true,
                        )?);
                    }
                    Layer::Cell(build_cell(&s, c, pre)?)
                }
                NetKind::Choice { choice, .. } => Layer::Choice(build_edge(&s, choice)?),
                NetKind::Residual { stride } => {
                    Layer::Residual(Residual::new(&s, c_in, c_out, *stride as usize)?)
                }
                NetKind::BnRelu => Layer::BnRelu(BatchNorm::new(&s.pp("bn"), c_in, true)?),
                NetKind::Head => Layer::Head(Linear::new(&s, c_in, c_out)?),
            });
        }
        let aux = if auxiliary {
            let (at, shape) = aux_position(net).map_err(candle_core::Error::Msg)?;
            Some((
                at,
                AuxHead::new(
                    &store.root().pp("aux"),
                    shape.c as usize,
                    net.input.classes as usize,
                )?,
            ))
        } else {
            None
        };
        Ok(Model {
            net: net.clone(),
            store,
            layers,
            aux,
        })
    }

    /// The model has an auxiliary head.
    pub fn has_aux(&self) -> bool {
        self.aux.is_some()
    }

    /// Trainable parameters without the auxiliary head (the figure papers report).
    pub fn param_count_without_aux(&self) -> usize {
        self.store
            .params()
            .iter()
            .filter(|(n, _)| !n.starts_with("aux."))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Logits (and in training mode the auxiliary logits) for a batch.
    ///
    /// # Shapes
    /// `x`: [N, C, H, W] (the space's input) → [N, classes].
    pub fn forward(&self, x: &Tensor, mut mode: Mode) -> Result<Output> {
        let train = matches!(mode, Mode::Train { .. });
        let eval = matches!(mode, Mode::Eval);
        // In evaluation nothing is differentiated: each layer's output is detached from the
        // graph and dropped after its last reader, so memory holds about one layer's
        // activations instead of the whole forward pass.
        let keep = if eval { Keep::UntilLastUse } else { Keep::All };
        let mut relus = LayerRelus {
            share: !eval,
            of: vec![None; self.layers.len()],
        };
        let mut aux = None;
        let logits = walk::layers(
            &self.net.reads(),
            x.clone(),
            keep,
            |i, inputs| -> Result<Tensor> {
                let y = self.layer_forward(i, inputs, x, &mut mode, &mut relus)?;
                if let Some((at, head)) = &self.aux
                    && *at == i
                    && train
                {
                    aux = Some(head.forward_after_relu(&relus.of(Some(i), &y)?, true)?);
                }
                Ok(if eval { y.detach() } else { y })
            },
        )?;
        Ok(Output { logits, aux })
    }

    /// Layer `i` on its inputs (`x`, the image, gives a zero output its batch and device).
    fn layer_forward(
        &self,
        i: usize,
        inputs: Vec<Tensor>,
        x: &Tensor,
        mode: &mut Mode,
        relus: &mut LayerRelus,
    ) -> Result<Tensor> {
        let train = mode.batch_stats();
        Ok(match &self.layers[i] {
            Layer::ConvBn(m) => m.forward(&inputs[0], train)?,
            Layer::Cell(c) => {
                let from = &self.net.layers[i].inputs;
                let states = (c.pre.iter().zip(inputs).enumerate())
                    .map(|(k, (pre, x))| match pre {
                        None => Ok(x),
                        Some(p) => {
                            p.forward_after_relu(&relus.of(from.get(k).copied(), &x)?, train)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                cell_states_forward(c, states, mode)?
            }
            Layer::Choice(e) => {
                match edge_forward(e, &inputs[0], &mut Shared::default(), mode, false)? {
                    Some(part) => part.into_term(train)?.0,
                    None => zeros_like_shape(x, self.net.layers[i].output)?,
                }
            }
            Layer::Residual(r) => r.forward(&inputs[0], train)?,
            Layer::BnRelu(bn) => {
                let y = bn.forward_relu(&inputs[0], train)?;
                mode.tap(&y);
                y
            }
            Layer::Head(h) => h.forward_pooled(&inputs[0])?,
        })
    }
}

impl From<WalkError> for candle_core::Error {
    fn from(e: WalkError) -> Self {
        candle_core::Error::Msg(e.0)
    }
}

fn build_edge(s: &Scope, e: &NetEdge) -> Result<Edge> {
    let s = s.pp(&e.name);
    Ok(match &e.op {
        NetOp::Op(Op::Zero) => Edge::Zero,
        NetOp::Op(op) => Edge::Op(op.build(
            &s,
            e.input.c as usize,
            e.output.c as usize,
            e.stride as usize,
            BnMode::FINAL,
        )?),
        NetOp::Cell(c) => Edge::Cell(Box::new(build_cell(&s, c, vec![None])?)),
    })
}

fn build_cell(s: &Scope, c: &NetCell, pre: Vec<Option<Preprocess>>) -> Result<Cell> {
    let (mut edges, mut links) = (Vec::new(), Vec::new());
    for e in c.graph.edge_indices() {
        let (from, to) = c
            .graph
            .edge_endpoints(e)
            .ok_or_else(|| candle_core::Error::Msg("a cell edge has no endpoints".into()))?;
        let edge = &c.graph[e];
        edges.push(build_edge(&s.pp("edges").pp(edge.index), edge)?);
        links.push(space::Edge {
            from: from.index(),
            to: to.index(),
        });
    }
    Ok(Cell {
        pre,
        edges,
        links,
        states: c.graph.node_count(),
        order: c.order.clone(),
        outputs: c.outputs.clone(),
        shapes: c.graph.node_weights().copied().collect(),
    })
}

/// One edge's contribution to its node (`None` for a zero edge), with the drop-path mask to
/// scale it by when `drop` and the mode draws one (cell edges, not searchable layers; never
/// identities). The mask is drawn here, right after the op, so the draws follow the edges'
/// order. `shared` holds what the edges reading state `x` share.
fn edge_forward<'m>(
    e: &'m Edge,
    x: &Tensor,
    shared: &mut Shared,
    mode: &mut Mode,
    drop: bool,
) -> Result<Option<Part<'m>>> {
    let op = match e {
        Edge::Zero => return Ok(None),
        Edge::Cell(c) => {
            let y = cell_forward(c, vec![x.clone()], mode)?;
            return Ok(Some(Part::Value((y, None))));
        }
        Edge::Op(op) => op,
    };
    let train = mode.batch_stats();
    let part = if op.starts_with_relu() {
        let r = match &mut shared.relu {
            Some(r) => r.clone(),
            None => {
                let r = shared.relu.insert(kernels::relu(x)?);
                mode.tap(r);
                r.clone()
            }
        };
        let until_bn = match mode {
            Mode::Train { .. } => op.forward_after_relu_until_bn(&r, train)?,
            _ => None,
        };
        match until_bn {
            Some((z, bn)) => Part::BeforeBn(z, bn, None),
            None => Part::Value((op.forward_after_relu(&r, train)?, None)),
        }
    } else {
        Part::Value((shared.forward(op, x, train)?, None))
    };
    let mask = match mode {
        Mode::Train { drop_path, rng } if drop && *drop_path > 0.0 && !op.is_identity() => {
            Some(drop_path_mask(x.dim(0)?, *drop_path, rng))
        }
        _ => None,
    };
    Ok(Some(part.scaled(mask)))
}

/// What the edges of a cell reading one state share: `relu(x)` for the ops that begin with a
/// ReLU, and the output of each [pure](OpModule::pure) op (a pool applied on three edges runs
/// once; the autograd graph sums its gradients before the one backward pass). Both live until
/// the cell's forward ends, in evaluation too.
#[derive(Default, Clone)]
struct Shared {
    relu: Option<Tensor>,
    pure: Vec<(Pure, Tensor)>,
}

impl Shared {
    /// `op` on `x`, the state these are shared for.
    fn forward(&mut self, op: &OpModule, x: &Tensor, train: bool) -> Result<Tensor> {
        let Some(key) = op.pure() else {
            return op.forward(x, train);
        };
        if let Some((_, y)) = self.pure.iter().find(|(k, _)| *k == key) {
            return Ok(y.clone());
        }
        let y = op.forward(x, train)?;
        self.pure.push((key, y.clone()));
        Ok(y)
    }
}

/// An edge's contribution to its node's sum, with its drop-path scales: a value, or (in
/// training) the value an op's final BN normalises and that BN, which then runs inside the
/// sum ([`BatchNorm::forward_add`]) so that the autograd graph does not keep its output.
enum Part<'m> {
    Value(kernels::Term),
    BeforeBn(Tensor, &'m BatchNorm, Option<kernels::SampleScales>),
}

impl Part<'_> {
    fn scaled(self, scales: Option<kernels::SampleScales>) -> Self {
        match self {
            Part::Value((y, _)) => Part::Value((y, scales)),
            Part::BeforeBn(z, bn, _) => Part::BeforeBn(z, bn, scales),
        }
    }

    /// The part as a value and its scales (a pending BN run on its own).
    fn into_term(self, train: bool) -> Result<kernels::Term> {
        match self {
            Part::Value(t) => Ok(t),
            Part::BeforeBn(z, bn, s) => Ok((bn.forward(&z, train)?, s)),
        }
    }
}

/// A node's value: its parts scaled and summed left to right, as [`kernels::scaled_sum`]
/// sums them. A pending BN after the first part runs fused into the sum; with two parts, a
/// first one with a pending BN goes second instead (`a + b` is `b + a` exactly).
fn node_sum(mut parts: Vec<Part>, train: bool) -> Result<Tensor> {
    if parts.len() == 2 && matches!(parts[0], Part::BeforeBn(..)) {
        parts.swap(0, 1);
    }
    let mut parts = parts.into_iter();
    let first = parts
        .next()
        .ok_or_else(|| candle_core::Error::Msg("a node without parts".into()))?;
    let mut acc = first.into_term(train)?;
    for part in parts {
        let sum = match part {
            Part::Value(t) => kernels::scaled_sum(&[acc, t])?,
            Part::BeforeBn(z, bn, s) => bn.forward_add(&z, train, &acc, s.as_ref())?,
        };
        acc = (sum, None);
    }
    match acc {
        (y, None) => Ok(y),
        scaled => kernels::scaled_sum(&[scaled]),
    }
}

/// Each layer's output after a ReLU, for the readers that begin with one (cell
/// preprocessing, the auxiliary head). With `share` (training) it is computed once per
/// forward pass, so the autograd graph keeps one copy however many readers there are;
/// without (evaluation) each reader computes its own, so nothing outlives the layer's last
/// reader.
struct LayerRelus {
    share: bool,
    of: Vec<Option<Tensor>>,
}

impl LayerRelus {
    /// `relu(x)`, `x` being the output of `layer` (`None`: the image, not shared).
    fn of(&mut self, layer: Option<usize>, x: &Tensor) -> Result<Tensor> {
        let Some(slot) = layer
            .filter(|_| self.share)
            .and_then(|j| self.of.get_mut(j))
        else {
            return kernels::relu(x);
        };
        match slot {
            Some(r) => Ok(r.clone()),
            None => Ok(slot.insert(kernels::relu(x)?).clone()),
        }
    }
}

impl Cell {
    pub(crate) fn dag(&self) -> walk::Dag<'_> {
        walk::Dag {
            states: self.states,
            order: &self.order,
            edges: &self.links,
        }
    }
}

/// The cell on its inputs (preprocessed here).
fn cell_forward(c: &Cell, inputs: Vec<Tensor>, mode: &mut Mode) -> Result<Tensor> {
    let train = mode.batch_stats();
    cell_states_forward(c, preprocess_inputs(&c.pre, inputs, train)?, mode)
}

/// The cell on its input states: each node the sum of its edges' outputs (under drop path,
/// each scaled by its mask within the sum, [`node_sum`]), zeros of its shape when every edge
/// is `Zero`.
fn cell_states_forward(c: &Cell, inputs: Vec<Tensor>, mode: &mut Mode) -> Result<Tensor> {
    let like = inputs
        .first()
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("a cell without inputs".into()))?;
    let mut shared = vec![Shared::default(); c.states];
    let states = walk::cell(
        mode,
        c.dag(),
        inputs,
        |mode, parts: &mut Vec<Part>, e, x| {
            let shared = &mut shared[c.links[e].from];
            parts.extend(edge_forward(&c.edges[e], x, shared, mode, true)?);
            Ok(())
        },
        |mode, node, parts| match parts.is_empty() {
            false => node_sum(parts, mode.batch_stats()),
            true => zeros_like_shape(&like, c.shapes[node]),
        },
    )?;
    concat_states(&states, &c.outputs)
}

/// Zeros of `[N, shape]`, N, dtype and device from `like`.
fn zeros_like_shape(like: &Tensor, shape: Shape) -> Result<Tensor> {
    Tensor::zeros(
        (
            like.dim(0)?,
            shape.c as usize,
            shape.h as usize,
            shape.w as usize,
        ),
        like.dtype(),
        like.device(),
    )
}

/// DARTS's drop path for a batch of `n`: per sample, 0 with probability `p`, else 1/(1−p)
/// (as f32), one draw from `rng` per sample, in order.
pub fn drop_path_mask(n: usize, p: f64, rng: &mut ChaCha8Rng) -> kernels::SampleScales {
    let keep = 1.0 - p;
    (0..n)
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: Op, stride: usize, bn: BnMode) -> OpModule {
        let store = Store::new(&Device::Cpu, 0);
        op.build(&store.root(), 4, 4, stride, bn).unwrap()
    }

    /// Equal pools on one state run once; a different pool, stride, or a pool with BN (a
    /// mixed op's) runs on its own. The shared output equals the op's own.
    #[test]
    fn equal_pure_ops_share_one_output() {
        let x = Tensor::randn(0f32, 1f32, (2, 4, 6, 6), &Device::Cpu).unwrap();
        let max3 = op(Op::MaxPool { kernel: 3 }, 2, BnMode::FINAL);
        let mut shared = Shared::default();
        let a = shared.forward(&max3, &x, true).unwrap();
        let b = shared.forward(&max3.clone(), &x, true).unwrap();
        assert_eq!(a.id(), b.id());
        let own = max3.forward(&x, true).unwrap();
        let diff = (a - &own).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        for other in [
            op(Op::MaxPool { kernel: 3 }, 1, BnMode::FINAL),
            op(Op::AvgPool { kernel: 3 }, 2, BnMode::FINAL),
            op(Op::MaxPool { kernel: 5 }, 2, BnMode::FINAL),
        ] {
            let y = shared.forward(&other, &x, true).unwrap();
            assert_ne!(y.id(), b.id());
            assert_eq!(shared.forward(&other, &x, true).unwrap().id(), y.id());
        }
        let with_bn = BnMode {
            affine: false,
            pool_bn: true,
        };
        let mixed = op(Op::MaxPool { kernel: 3 }, 2, with_bn);
        assert_eq!(mixed.pure(), None);
        let (p, q) = (
            shared.forward(&mixed, &x, true).unwrap(),
            shared.forward(&mixed, &x, true).unwrap(),
        );
        assert_ne!(p.id(), q.id());
        assert_eq!(shared.pure.len(), 4);
    }

    /// The input gradient through a shared pool read by two edges equals the one through two
    /// pools of their own (to rounding: the edges' gradients are summed before the pool's
    /// backward instead of after).
    #[test]
    fn a_shared_pool_passes_both_edges_gradients() {
        let dev = Device::Cpu;
        let x = candle_core::Var::randn(0f32, 1f32, (2, 4, 6, 6), &dev).unwrap();
        let (a, b) = (
            Tensor::randn(0f32, 1f32, (2, 4, 3, 3), &dev).unwrap(),
            Tensor::randn(0f32, 1f32, (2, 4, 3, 3), &dev).unwrap(),
        );
        let max3 = op(Op::MaxPool { kernel: 3 }, 2, BnMode::FINAL);
        let grad = |share: bool| {
            let mut shared = Shared::default();
            let mut edge = || match share {
                true => shared.forward(&max3, x.as_tensor(), true).unwrap(),
                false => max3.forward(x.as_tensor(), true).unwrap(),
            };
            let (y1, y2) = (edge(), edge());
            assert_eq!(share, y1.id() == y2.id());
            let loss = ((y1 * &a).unwrap() + (y2 * &b).unwrap()).unwrap();
            let g = loss.sum_all().unwrap().backward().unwrap();
            g.get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (shared, own) = (grad(true), grad(false));
        assert!(shared.iter().any(|&v| v != 0.0));
        for (s, o) in shared.iter().zip(&own) {
            assert!((s - o).abs() <= 1e-6 * (1.0 + o.abs()), "{s} vs {o}");
        }
    }
}
