//! The discrete network: a space with one architecture chosen, built as concrete layers, each
//! cell a petgraph DAG of its states whose edges carry the chosen op, its stride, and its
//! counts. Retraining builds its modules from this, and export lowers it.

use petgraph::graph::{DiGraph, NodeIndex};

use super::eval::{LayerShapes, cell_output, infer_cell, node_width};
use super::{Candidate, LayerKind, Pre, Space};
use crate::ops::{BnMode, Cost, Op, OpCtx, Shape};
use crate::space::genotype::Architecture;
use crate::spec::space::{Act, Input};

/// A discrete network.
#[derive(Debug, Clone)]
pub struct Net {
    pub space: String,
    pub input: Input,
    pub layers: Vec<NetLayer>,
    /// Node weight = layer index; an edge per input of each layer.
    pub graph: DiGraph<usize, ()>,
}

/// One layer, with its shapes and counts (parameters as retrained: affine BN everywhere).
#[derive(Debug, Clone)]
pub struct NetLayer {
    pub kind: NetKind,
    /// Layers this one reads (empty: the image).
    pub inputs: Vec<usize>,
    pub input_shapes: Vec<Shape>,
    pub output: Shape,
    pub cost: Cost,
}

#[derive(Debug, Clone)]
pub enum NetKind {
    ConvBn {
        kernel: u32,
        stride: u32,
        act: Act,
    },
    Cell(NetCell),
    /// A searchable layer of a chain network with its chosen op.
    Choice {
        slot: usize,
        choice: NetEdge,
    },
    Residual {
        stride: u32,
    },
    BnRelu,
    Head,
}

/// A cell with its choices made.
#[derive(Debug, Clone)]
pub struct NetCell {
    pub name: String,
    /// Node width.
    pub width: u64,
    /// Stride of the edges leaving the inputs.
    pub stride: u32,
    /// How each input is brought to `width` first.
    pub pre: Vec<Pre>,
    /// Number of input states (graph nodes `0..inputs`).
    pub inputs: usize,
    /// States (node weight = shape) and chosen edges; node index = state index.
    pub graph: DiGraph<Shape, NetEdge>,
    /// The states concatenated into the output, in order.
    pub outputs: Vec<usize>,
    /// Intermediate nodes in an order where every edge goes forward.
    pub order: Vec<usize>,
}

/// A chosen op on an edge (or a searchable layer).
#[derive(Debug, Clone)]
pub struct NetEdge {
    /// The edge's index in its cell type (the alpha row), or the searchable layer's slot.
    pub index: usize,
    /// The candidate's name in the space.
    pub name: String,
    pub op: NetOp,
    pub stride: u32,
    pub input: Shape,
    pub output: Shape,
    pub cost: Cost,
}

#[derive(Debug, Clone)]
pub enum NetOp {
    Op(Op),
    /// A motif, itself a discrete cell.
    Cell(Box<NetCell>),
}

impl Net {
    /// What each layer reads, as [`super::walk::layers`] takes it.
    pub fn reads(&self) -> Vec<&[usize]> {
        self.layers.iter().map(|l| l.inputs.as_slice()).collect()
    }

    /// Total parameters and multiply-adds.
    pub fn cost(&self) -> Cost {
        self.layers.iter().map(|l| l.cost).sum()
    }
}

impl NetCell {
    /// Cost of the cell's edges (preprocessing excluded).
    pub fn edge_cost(&self) -> Cost {
        self.graph.edge_weights().map(|e| e.cost).sum()
    }
}

impl Space {
    /// Builds the discrete network of `arch` (which must have been resolved against this
    /// space).
    pub fn build(&self, arch: &Architecture) -> Net {
        let bn = BnMode::FINAL;
        let mut layers = Vec::new();
        for l in &self.network.layers {
            let input = l.input_shapes[0];
            let LayerShapes { fixed, states } = checked(l.shapes(bn));
            let kind = match &l.kind {
                LayerKind::ConvBn {
                    kernel,
                    stride,
                    act,
                } => NetKind::ConvBn {
                    kernel: *kernel,
                    stride: *stride,
                    act: *act,
                },
                LayerKind::Residual { stride } => NetKind::Residual { stride: *stride },
                LayerKind::BnRelu => NetKind::BnRelu,
                LayerKind::Head => NetKind::Head,
                LayerKind::Cell {
                    cell,
                    width,
                    stride,
                    pre,
                } => NetKind::Cell(self.build_cell(
                    arch,
                    *cell,
                    &states,
                    *width,
                    *stride,
                    pre.clone(),
                )),
                LayerKind::Choice { slot, stride } => NetKind::Choice {
                    slot: *slot,
                    choice: self.build_edge(
                        arch,
                        *slot,
                        arch.slots[*slot],
                        input,
                        l.output.c,
                        *stride,
                    ),
                },
            };
            let cost = fixed
                + match &kind {
                    NetKind::Cell(c) => c.edge_cost(),
                    NetKind::Choice { choice, .. } => choice.cost,
                    _ => Cost::default(),
                };
            layers.push(NetLayer {
                kind,
                inputs: l.inputs.clone(),
                input_shapes: l.input_shapes.clone(),
                output: l.output,
                cost,
            });
        }
        Net {
            space: self.name.clone(),
            input: self.input,
            layers,
            graph: self.network.graph.clone(),
        }
    }

    fn build_edge(
        &self,
        arch: &Architecture,
        index: usize,
        c: Candidate,
        input: Shape,
        c_out: u64,
        stride: u32,
    ) -> NetEdge {
        let name = self.candidate_name(c).to_string();
        match c {
            Candidate::Op(o) => {
                let op = self.ops[o].1;
                let a = checked(op.apply(&OpCtx {
                    input,
                    c_out,
                    stride,
                    bn: BnMode::FINAL,
                }));
                NetEdge {
                    index,
                    name,
                    op: NetOp::Op(op),
                    stride,
                    input,
                    output: a.output,
                    cost: a.cost,
                }
            }
            Candidate::Cell(m) => {
                let width = checked(node_width(&self.cells[m], c_out));
                let cell = self.build_cell(arch, m, &[input], width, stride, vec![Pre::None]);
                let output = cell_output(
                    &self.cells[m],
                    &cell.graph.node_weights().copied().collect::<Vec<_>>(),
                );
                let cost = cell.edge_cost();
                NetEdge {
                    index,
                    name,
                    op: NetOp::Cell(Box::new(cell)),
                    stride,
                    input,
                    output,
                    cost,
                }
            }
        }
    }

    fn build_cell(
        &self,
        arch: &Architecture,
        ci: usize,
        inputs: &[Shape],
        width: u64,
        stride: u32,
        pre: Vec<Pre>,
    ) -> NetCell {
        let cell = &self.cells[ci];
        let shapes = checked(infer_cell(
            &self.ops,
            &self.cells,
            ci,
            inputs,
            width,
            stride,
        ));
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = shapes.iter().map(|&s| graph.add_node(s)).collect();
        let chosen = arch.cells[ci]
            .as_ref()
            .expect("a resolved architecture chooses for every cell in use");
        for &(e, c) in chosen {
            let edge = cell.edges[e];
            let s = if edge.from < cell.inputs { stride } else { 1 };
            let built = self.build_edge(arch, e, c, shapes[edge.from], width, s);
            graph.add_edge(nodes[edge.from], nodes[edge.to], built);
        }
        NetCell {
            name: cell.name.clone(),
            width,
            stride,
            pre,
            inputs: cell.inputs,
            graph,
            outputs: cell.output_states(),
            order: cell.order.clone(),
        }
    }
}

/// Shapes and ops were checked when the space was compiled.
fn checked<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("the space was checked at compile time, yet: {e}"))
}
