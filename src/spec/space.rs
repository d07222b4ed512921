//! Serde types of a search-space file (`schemas/*.ron`), as written.
//!
//! Field defaults are named here once and shown by `nas-pipe check`. Validation (names,
//! graphs, shapes) is [`crate::space::compile`]'s job.

use serde::{Deserialize, Serialize};

use super::{OrderedMap, Spanned};

/// A search space: an op vocabulary, cells built from it, and the network around the cells.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// Short name; shown in reports and stored in genotypes.
    pub name: Spanned<String>,
    /// Library files (paths relative to this file) whose ops and cells come before this
    /// file's own, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<Spanned<String>>,
    /// The input the counts in `nas-pipe check` assume when no pipeline gives one.
    #[serde(default)]
    pub input: Spanned<Input>,
    /// The vocabulary, in alpha-column order (also the tie-breaking order in derivation).
    pub ops: Spanned<Vec<(Spanned<String>, Spanned<Op>)>>,
    /// Cell types by name. A cell may be a candidate on another cell's edges (a motif).
    #[serde(default)]
    pub cells: Spanned<OrderedMap<Spanned<String>, Spanned<Cell>>>,
    /// The skeleton around the cells.
    pub network: Spanned<Network>,
    /// How a discrete architecture is read off the architecture weights.
    pub derive: Spanned<Derive>,
    /// BN in the weight-sharing network. Default: [`Supernet::default`].
    #[serde(default)]
    pub supernet: Spanned<Supernet>,
}

/// A file of ops and cells for spaces to include: `Library(include: [...], ops: [...], cells: {...})`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Library {
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub ops: Vec<(Spanned<String>, Spanned<Op>)>,
    #[serde(default)]
    pub cells: OrderedMap<Spanned<String>, Spanned<Cell>>,
}

/// Input images and classes. Default: 3 channels, 32×32, 10 classes (CIFAR-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub channels: u32,
    pub size: u32,
    pub classes: u32,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            channels: 3,
            size: 32,
            classes: 10,
        }
    }
}

/// How BN is built in the weight-sharing network's cells (the fixed blocks around the
/// cells always have affine BN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct Supernet {
    /// BN inside cells (ops and preprocessing) has affine parameters. Default `false`, as in
    /// DARTS.
    #[serde(default)]
    pub affine: bool,
    /// Every pool inside a mixed op is followed by BN(C, affine = false). Default `false`;
    /// DARTS sets it.
    #[serde(default)]
    pub pool_bn: bool,
}

/// A cell: `inputs` input states, `nodes` intermediate nodes, edges that each choose among
/// the candidates, each node the sum of its incoming edges.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub inputs: Spanned<u32>,
    pub nodes: Spanned<u32>,
    /// Which states feed which nodes. Default `Dense`.
    #[serde(default)]
    pub edges: Spanned<Edges>,
    /// How a node combines its incoming edges. Default `Sum`.
    #[serde(default)]
    pub node: NodeCombine,
    /// What the cell outputs. Default `Concat`.
    #[serde(default)]
    pub output: Spanned<Output>,
    /// Edges leaving the cell's inputs have stride 2 (and in a `Stacked` network the width
    /// doubles). Default `false`.
    #[serde(default)]
    pub reduction: bool,
    /// Names of ops or cells an edge chooses among. Default: every op of the vocabulary.
    #[serde(default)]
    pub candidates: Option<Spanned<Vec<Spanned<String>>>>,
    /// Derivation rule for this cell. Default: the space's `derive`.
    #[serde(default)]
    pub derive: Option<Spanned<Derive>>,
}

/// The edges of a cell. States are numbered inputs first (0..inputs), then nodes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub enum Edges {
    /// Every earlier state feeds every node (DARTS, NAS-Bench-201).
    #[default]
    Dense,
    /// Only these `(from, to)` state pairs.
    Explicit(Vec<Spanned<(u32, u32)>>),
}

/// How a node combines its incoming edges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum NodeCombine {
    #[default]
    Sum,
}

/// A cell's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Output {
    /// Channel concatenation of all intermediate nodes (DARTS).
    #[default]
    Concat,
    /// The last node (NAS-Bench-201).
    Last,
}

/// The derivation rule: how a discrete cell is read off the architecture weights.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
pub enum Derive {
    /// Each node keeps its `per_node` strongest incoming edges, ranked by their strongest op
    /// outside `exclude`; each kept edge takes that op (DARTS).
    TopK {
        per_node: u32,
        #[serde(default)]
        exclude: Vec<Spanned<String>>,
    },
    /// Every edge takes its strongest op, all ops included (NAS-Bench-201).
    ArgmaxPerEdge,
}

/// The skeleton around the cells.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum Network {
    /// DARTS-style: a stem, `layers` cells each fed by the two previous cells' outputs, the
    /// width doubling at each reduction cell, then the head.
    Stacked {
        stem: Spanned<Stem>,
        channels: Spanned<u32>,
        layers: Spanned<u32>,
        normal: Spanned<String>,
        reduction: Spanned<String>,
        reductions_at: Spanned<Vec<Spanned<At>>>,
        #[serde(default)]
        head: Head,
    },
    /// A chain of blocks, each fed by the one before. `width` and `depth` are the nominal
    /// values the numbers in `blocks` were written for: a pipeline that overrides the width
    /// scales every channel count by `new / width`, and one that overrides the depth scales
    /// every `Repeat` and `Stage` count by `new / depth` (both must divide evenly).
    Sequence {
        #[serde(default)]
        width: Option<Spanned<u32>>,
        #[serde(default)]
        depth: Option<Spanned<u32>>,
        blocks: Vec<Spanned<Block>>,
    },
}

/// The stem of a `Stacked` network: conv k×k from the image to `multiplier × channels`,
/// then BN.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum Stem {
    ConvBn { kernel: u32, multiplier: f64 },
}

/// Where a reduction cell sits in a `Stacked` network of `layers` cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum At {
    /// Cell `layers / 3` (integer division).
    Third,
    /// Cell `2 * layers / 3`.
    TwoThirds,
    /// Cell `layers / 2`.
    Half,
    /// This cell index (0-based).
    Index(u32),
}

/// The classifier head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Head {
    /// Global average pool, then linear(C, classes) with bias.
    #[default]
    GlobalPoolLinear,
}

/// Activation after a conv-BN block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Act {
    #[default]
    None,
    Relu,
    Relu6,
}

/// A block of a `Sequence` network.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum Block {
    /// Conv k×k → `channels`, BN, then `act`. `stride` default 1, `act` default `None`.
    ConvBn {
        kernel: u32,
        channels: u32,
        #[serde(default = "one")]
        stride: u32,
        #[serde(default)]
        act: Act,
    },
    /// BN then ReLU.
    BnRelu,
    /// NAS-Bench-201's residual block: ReLU-conv3×3(stride)-BN, ReLU-conv3×3-BN, plus a
    /// shortcut (avg pool 2×2 stride 2 then conv 1×1, when the shape changes).
    ResidualBlock { channels: u32, stride: u32 },
    /// One cell of the named type, fed by the previous block (cells here take 1 input).
    Cell(String),
    /// The block, `n` times.
    Repeat(u32, Box<Spanned<Block>>),
    /// One searchable layer: one of `candidates` mapping to `channels` at `stride`.
    Choice {
        channels: u32,
        #[serde(default = "one")]
        stride: u32,
        candidates: Spanned<Vec<Spanned<String>>>,
    },
    /// `layers` searchable layers: the first maps to `channels` at `stride`, the rest keep
    /// the shape. The first layer changes shape, so `Identity` candidates (skipping the
    /// layer) are offered only from the second layer on.
    Stage {
        channels: u32,
        layers: u32,
        stride: u32,
        candidates: Spanned<Vec<Spanned<String>>>,
    },
    /// Global average pool, then linear(C, classes) with bias. Must be last.
    GlobalPoolLinear,
}

fn one() -> u32 {
    1
}

/// A primitive op, as written in a space's `ops` list: `("sep_conv_3x3", SepConv(kernel: 3))`.
///
/// Every op maps `c_in` channels at stride `s` to `c_out` channels; which combinations an op
/// supports is checked by `ops::Op::apply`. Each variant has its line in the `families!`
/// registry of `ops/mod.rs`, which maps it to its family's file (adding an op family: that
/// file, the variant here, and the registry line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Op {
    /// Zeros (`none`). At stride 2 the input is first subsampled (`x[:, :, ::2, ::2]`).
    Zero,
    /// Identity at stride 1; FactorizedReduce(c_in, c_out) at stride 2.
    Identity,
    /// Max pooling, same padding (padding never wins).
    MaxPool { kernel: u32 },
    /// Average pooling, same padding excluded from the average.
    AvgPool { kernel: u32 },
    /// DARTS separable conv: [ReLU, depthwise k×k (stride s), pointwise c_in→c_in, BN], then
    /// [ReLU, depthwise k×k, pointwise c_in→c_out, BN].
    SepConv { kernel: u32 },
    /// DARTS dilated conv: ReLU, depthwise dilated k×k (stride s), pointwise c_in→c_out, BN.
    DilConv { kernel: u32, dilation: u32 },
    /// ReLU, conv k×k c_in→c_out (stride s), BN (NAS-Bench-201's `nor_conv_kxk`).
    ReluConvBn { kernel: u32 },
    /// MobileNetV2 inverted residual: [conv 1×1 c_in→t·c_in, BN, ReLU6] (absent when t = 1),
    /// depthwise k×k (stride s), BN, ReLU6, conv 1×1 →c_out, BN; plus the input when s = 1
    /// and c_in = c_out.
    InvertedResidual { kernel: u32, expansion: u32 },
}
