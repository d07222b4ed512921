//! Shape inference and counts over a compiled space: parameters and multiply-adds of the
//! weight-sharing network and of discrete architectures, their range over the space, the
//! number of architectures and of architecture weights. All from the graph alone.

use num_bigint::BigUint;
use num_traits::{One, Zero};

use super::{Candidate, CellType, Edge, Layer, LayerKind, Pre, Rule, Space, walk};
use crate::ops::{self, Applied, BnMode, Cost, Op, OpCtx, Shape};
use crate::space::genotype::Architecture;

/// Brings a cell input to `width` channels.
pub fn preprocess(pre: Pre, input: Shape, width: u64, bn: BnMode) -> Result<Applied, String> {
    match pre {
        Pre::None => Ok(Applied {
            output: input,
            cost: Cost::default(),
        }),
        Pre::ReluConvBn => ops::relu_conv_bn_cost(input, width, 1, 1, bn),
        Pre::FactorizedReduce => ops::factorized_reduce_cost(input, width, bn),
    }
}

/// NAS-Bench-201's residual block (conv_a, conv_b, and the shortcut when the shape changes).
pub fn residual(input: Shape, c_out: u64, stride: u32, bn: BnMode) -> Result<Applied, String> {
    let a = ops::relu_conv_bn_cost(input, c_out, 3, stride, bn)?;
    let b = ops::relu_conv_bn_cost(a.output, c_out, 3, 1, bn)?;
    let short = if stride == 2 {
        // avg pool 2×2 stride 2 (no padding), then conv 1×1 without BN.
        let pooled = Shape {
            c: input.c,
            h: input.h / 2,
            w: input.w / 2,
        };
        let out = Shape { c: c_out, ..pooled };
        Applied {
            output: out,
            cost: Cost {
                params: ops::prod(&[input.c, c_out]),
                macs: ops::prod(&[out.c, out.h, out.w, input.c]),
                acts: ops::prod(&[2, out.elems()]).saturating_add(pooled.elems()),
            },
        }
    } else if input.c != c_out {
        ops::relu_conv_bn_cost(input, c_out, 1, 1, bn)?
    } else {
        Applied {
            output: input,
            cost: Cost::default(),
        }
    };
    if short.output != b.output {
        return Err(format!(
            "the shortcut gives {} but the residual branch gives {} (odd input size {}x{} at stride 2)",
            short.output, b.output, input.h, input.w
        ));
    }
    Ok(Applied {
        output: b.output,
        cost: a.cost + b.cost + short.cost,
    })
}

/// The node width of a one-input cell mapping `c` channels to `c`: `c / multiplier`.
pub fn node_width(cell: &CellType, c: u64) -> Result<u64, String> {
    let k = cell.multiplier();
    if !c.is_multiple_of(k) {
        return Err(format!(
            "it concatenates {k} nodes, so its {c} channels must divide by {k}"
        ));
    }
    Ok(c / k)
}

/// The cell's output shape from the shapes of its states.
pub fn cell_output(cell: &CellType, states: &[Shape]) -> Shape {
    let outs = cell.output_states();
    let first = states[outs[0]];
    Shape {
        c: outs
            .iter()
            .fold(0u64, |a, &s| a.saturating_add(states[s].c)),
        ..first
    }
}

/// The context of edge `e` of a cell whose states have `states` shapes.
fn edge_ctx(
    cell: &CellType,
    e: usize,
    states: &[Shape],
    width: u64,
    stride: u32,
    bn: BnMode,
) -> OpCtx {
    edge_ctx_from(cell, e, states[cell.edges[e].from], width, stride, bn)
}

/// The context of edge `e` of a cell, given the shape of its source state.
fn edge_ctx_from(
    cell: &CellType,
    e: usize,
    input: Shape,
    width: u64,
    stride: u32,
    bn: BnMode,
) -> OpCtx {
    let edge = cell.edges[e];
    OpCtx {
        input,
        c_out: width,
        stride: if edge.from < cell.inputs { stride } else { 1 },
        bn,
    }
}

/// Applies one candidate: an op, or a motif cell with all its candidates.
#[allow(clippy::too_many_arguments)]
pub fn apply_candidate(
    ops: &[(String, Op)],
    cells: &[CellType],
    c: Candidate,
    input: Shape,
    c_out: u64,
    stride: u32,
    bn: BnMode,
) -> Result<Applied, String> {
    match c {
        Candidate::Op(o) => ops[o].1.apply(&OpCtx {
            input,
            c_out,
            stride,
            bn,
        }),
        Candidate::Cell(m) => {
            let cell = &cells[m];
            if input.c != c_out {
                return Err(format!(
                    "motif \"{}\" maps C to C channels, but this edge maps {} to {c_out}",
                    cell.name, input.c
                ));
            }
            let width =
                node_width(cell, c_out).map_err(|e| format!("motif \"{}\": {e}", cell.name))?;
            let (states, cost) = cell_cost(ops, cells, m, &[input], width, stride, bn)
                .map_err(|e| format!("in motif \"{}\": {e}", cell.name))?;
            Ok(Applied {
                output: cell_output(cell, &states),
                cost,
            })
        }
    }
}

/// Infers the shapes of every state of cell `ci`, trying every candidate on every edge.
pub fn infer_cell(
    ops: &[(String, Op)],
    cells: &[CellType],
    ci: usize,
    inputs: &[Shape],
    width: u64,
    stride: u32,
) -> Result<Vec<Shape>, String> {
    cell_cost(ops, cells, ci, inputs, width, stride, BnMode::FINAL).map(|(s, _)| s)
}

/// Shapes of the states of cell `ci` and the cost of all candidates on all its edges
/// (preprocessing excluded). Every candidate feeding a node must give it the same shape.
#[allow(clippy::too_many_arguments)]
pub fn cell_cost(
    ops: &[(String, Op)],
    cells: &[CellType],
    ci: usize,
    inputs: &[Shape],
    width: u64,
    stride: u32,
    bn: BnMode,
) -> Result<(Vec<Shape>, Cost), String> {
    let cell = &cells[ci];
    let mut cost = Cost::default();
    // Per node: its shape, and which candidate on which edge gave it first.
    type Seen = Option<(Shape, String)>;
    let states = walk::cell(
        &mut cost,
        cell.dag(),
        inputs.to_vec(),
        |cost, seen: &mut Seen, e, &input| {
            let Edge { from, to } = cell.edges[e];
            let ctx = edge_ctx_from(cell, e, input, width, stride, bn);
            for &c in &cell.candidates {
                let name = match c {
                    Candidate::Op(o) => &ops[o].0,
                    Candidate::Cell(m) => &cells[m].name,
                };
                let a = apply_candidate(ops, cells, c, ctx.input, ctx.c_out, ctx.stride, bn)
                    .map_err(|m| {
                        format!(
                            "edge {e} ({from} → {to}): \"{name}\" on input {}: {m}",
                            ctx.input
                        )
                    })?;
                *cost += a.cost;
                match seen {
                    None => *seen = Some((a.output, format!("\"{name}\" on edge {e}"))),
                    Some((s, what)) if *s != a.output => {
                        return Err(format!(
                            "node {to} cannot sum its inputs: {what} gives {s} but \"{name}\" on edge {e} gives {}",
                            a.output
                        ));
                    }
                    Some(_) => {}
                }
            }
            // The edge's sum over its candidates, added into its node.
            if let Some((s, _)) = seen {
                *cost += Cost::new(0, 0, s.elems());
            }
            Ok(())
        },
        |_, _, seen| Ok(seen.expect("every node has an input and a candidate").0),
    )?;
    Ok((states, cost))
}

/// One place a cell type is used: its input shapes, node width and stride.
#[derive(Debug, Clone)]
struct Occurrence {
    inputs: Vec<Shape>,
    width: u64,
    stride: u32,
}

/// Componentwise (params, MACs) minimum and maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostRange {
    pub min: Cost,
    pub max: Cost,
}

impl CostRange {
    fn point(c: Cost) -> Self {
        CostRange { min: c, max: c }
    }
    fn plus(self, o: CostRange) -> Self {
        CostRange {
            min: self.min + o.min,
            max: self.max + o.max,
        }
    }
    fn union(self, o: CostRange) -> Self {
        CostRange {
            min: Cost {
                params: self.min.params.min(o.min.params),
                macs: self.min.macs.min(o.min.macs),
                acts: self.min.acts.min(o.min.acts),
            },
            max: Cost {
                params: self.max.params.max(o.max.params),
                macs: self.max.macs.max(o.max.macs),
                acts: self.max.acts.max(o.max.acts),
            },
        }
    }
}

/// One skeleton layer at the shape level, as the counts, the discrete network and the
/// latency table see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerShapes {
    /// What the layer costs outside its choices: the stem, a residual block, BN, the head,
    /// a cell's input preprocessing; nothing for a searchable layer.
    pub fixed: Cost,
    /// The states its choices read: a cell's inputs after preprocessing, else the layer's
    /// inputs.
    pub states: Vec<Shape>,
}

impl Layer {
    /// The layer's [`LayerShapes`]; a cell's preprocessing has BN as `bn_cells` says.
    pub fn shapes(&self, bn_cells: BnMode) -> Result<LayerShapes, String> {
        let input = self.input_shapes[0];
        let c_out = self.output.c;
        let fixed = match &self.kind {
            LayerKind::ConvBn { kernel, stride, .. } => {
                ops::conv_bn_cost(input, c_out, *kernel, *stride)?.cost
            }
            LayerKind::Residual { stride } => residual(input, c_out, *stride, BnMode::FINAL)?.cost,
            LayerKind::BnRelu => {
                Cost::new(input.c.saturating_mul(2), 0, ops::prod(&[3, input.elems()]))
            }
            LayerKind::Head => ops::linear_cost(input.c, c_out),
            LayerKind::Cell { width, pre, .. } => {
                let mut fixed = Cost::default();
                let mut states = Vec::new();
                for (&s, &p) in self.input_shapes.iter().zip(pre) {
                    let a = preprocess(p, s, *width, bn_cells)?;
                    fixed += a.cost;
                    states.push(a.output);
                }
                return Ok(LayerShapes { fixed, states });
            }
            LayerKind::Choice { .. } => Cost::default(),
        };
        Ok(LayerShapes {
            fixed,
            states: self.input_shapes.clone(),
        })
    }
}

impl Space {
    fn fixed_cost(&self, bn_cells: BnMode) -> Result<Cost, String> {
        let mut total = Cost::default();
        for l in &self.network.layers {
            total += l.shapes(bn_cells)?.fixed;
        }
        Ok(total)
    }

    /// The states a cell layer's edges see (its inputs after preprocessing).
    fn cell_inputs(&self, l: &Layer) -> Vec<Shape> {
        l.shapes(BnMode::FINAL)
            .expect("shapes were checked at compile time")
            .states
    }

    /// Every candidate of every edge and searchable layer, with cell BN as `bn` says.
    fn total(&self, bn: BnMode) -> Result<Cost, String> {
        let mut total = self.fixed_cost(bn)?;
        for l in &self.network.layers {
            match &l.kind {
                LayerKind::Cell {
                    cell,
                    width,
                    stride,
                    ..
                } => {
                    let inputs = self.cell_inputs(l);
                    total +=
                        cell_cost(&self.ops, &self.cells, *cell, &inputs, *width, *stride, bn)?.1;
                }
                LayerKind::Choice { slot, stride } => {
                    for &c in &self.slots[*slot].candidates {
                        let (input, c_out) = (l.input_shapes[0], l.output.c);
                        total +=
                            apply_candidate(&self.ops, &self.cells, c, input, c_out, *stride, bn)?
                                .cost;
                    }
                }
                _ => {}
            }
        }
        Ok(total)
    }

    /// Parameters and multiply-adds of the weight-sharing network: every candidate of every
    /// edge, BN in cells as the space's `supernet` section says. Architecture weights are
    /// not included (see [`Space::alphas`]).
    pub fn supernet_cost(&self) -> Cost {
        self.total(self.supernet)
            .expect("shapes were checked at compile time")
    }

    /// Parameters and multiply-adds of one discrete architecture as retrained: affine BN
    /// everywhere, no BN after pools, no auxiliary head.
    pub fn discrete_cost(&self, arch: &Architecture) -> Cost {
        self.build(arch).cost()
    }

    /// Number of architecture weights: one per candidate per edge of each cell type, and one
    /// per candidate per searchable layer.
    pub fn alphas(&self) -> usize {
        let used = self.used_cells();
        self.cells
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(c, _)| c.edges.len() * c.candidates.len())
            .sum::<usize>()
            + self.slots.iter().map(|s| s.candidates.len()).sum::<usize>()
    }

    fn occurrences(&self) -> Vec<Vec<Occurrence>> {
        let mut occ = vec![Vec::new(); self.cells.len()];
        for l in &self.network.layers {
            if let LayerKind::Cell {
                cell,
                width,
                stride,
                ..
            } = &l.kind
            {
                occ[*cell].push(Occurrence {
                    inputs: self.cell_inputs(l),
                    width: *width,
                    stride: *stride,
                });
            }
        }
        occ
    }

    /// Cost range of a cell's edges over its discrete versions, summed over `occs`.
    fn cell_range(&self, ci: usize, occs: &[Occurrence]) -> CostRange {
        let cell = &self.cells[ci];
        let states: Vec<Vec<Shape>> = occs
            .iter()
            .map(|o| {
                infer_cell(&self.ops, &self.cells, ci, &o.inputs, o.width, o.stride)
                    .expect("checked")
            })
            .collect();
        let edge_range = |e: usize| -> CostRange {
            cell.allowed()
                .map(|c| match c {
                    Candidate::Op(o) => CostRange::point(
                        occs.iter()
                            .zip(&states)
                            .map(|(oc, st)| {
                                let ctx = edge_ctx(cell, e, st, oc.width, oc.stride, BnMode::FINAL);
                                self.ops[o].1.apply(&ctx).expect("checked").cost
                            })
                            .sum(),
                    ),
                    Candidate::Cell(m) => {
                        let inner: Vec<Occurrence> = occs
                            .iter()
                            .zip(&states)
                            .map(|(oc, st)| {
                                let ctx = edge_ctx(cell, e, st, oc.width, oc.stride, BnMode::FINAL);
                                let width = node_width(&self.cells[m], ctx.c_out).expect("checked");
                                Occurrence {
                                    inputs: vec![ctx.input],
                                    width,
                                    stride: ctx.stride,
                                }
                            })
                            .collect();
                        self.cell_range(m, &inner)
                    }
                })
                .reduce(CostRange::union)
                .expect("every edge has an allowed candidate")
        };
        let mut total = CostRange::default();
        for node in cell.inputs..cell.states() {
            let mut ranges: Vec<CostRange> = cell.incoming(node).map(edge_range).collect();
            match cell.rule {
                Rule::ArgmaxPerEdge => {
                    for r in ranges {
                        total = total.plus(r);
                    }
                }
                Rule::TopK { per_node, .. } => {
                    let k = per_node;
                    let mut min = |f: fn(&Cost) -> u64| {
                        ranges.sort_by_key(|r| f(&r.min));
                        ranges.iter().take(k).map(|r| f(&r.min)).sum::<u64>()
                    };
                    let min_c = Cost::new(min(|c| c.params), min(|c| c.macs), min(|c| c.acts));
                    let mut max = |f: fn(&Cost) -> u64| {
                        ranges.sort_by_key(|r| std::cmp::Reverse(f(&r.max)));
                        ranges.iter().take(k).map(|r| f(&r.max)).sum::<u64>()
                    };
                    let max_c = Cost::new(max(|c| c.params), max(|c| c.macs), max(|c| c.acts));
                    total = total.plus(CostRange {
                        min: min_c,
                        max: max_c,
                    });
                }
            }
        }
        total
    }

    /// The smallest and largest parameter and multiply-add counts over the discrete
    /// architectures, as retrained (each field on its own). A cell type's choice is shared
    /// by all its uses; this is exact for spaces without motifs. With motifs, a motif's
    /// choice is optimised separately for each edge it can sit on, which makes the range an
    /// outer bound.
    pub fn cost_range(&self) -> CostRange {
        let fixed = self.fixed_cost(BnMode::FINAL).expect("checked");
        let mut total = CostRange::point(fixed);
        for (ci, occs) in self.occurrences().iter().enumerate() {
            if !occs.is_empty() {
                total = total.plus(self.cell_range(ci, occs));
            }
        }
        for l in &self.network.layers {
            if let LayerKind::Choice { slot, stride } = &l.kind {
                let r = self.slots[*slot]
                    .candidates
                    .iter()
                    .map(|&c| match c {
                        Candidate::Op(o) => CostRange::point(
                            self.ops[o]
                                .1
                                .apply(&OpCtx {
                                    input: l.input_shapes[0],
                                    c_out: l.output.c,
                                    stride: *stride,
                                    bn: BnMode::FINAL,
                                })
                                .expect("checked")
                                .cost,
                        ),
                        Candidate::Cell(m) => {
                            let width = node_width(&self.cells[m], l.output.c).expect("checked");
                            self.cell_range(
                                m,
                                &[Occurrence {
                                    inputs: l.input_shapes.clone(),
                                    width,
                                    stride: *stride,
                                }],
                            )
                        }
                    })
                    .reduce(CostRange::union)
                    .expect("slots have candidates");
                total = total.plus(r);
            }
        }
        total
    }

    /// The number of distinct discrete architectures (genotypes). A cell type's choice is
    /// shared by all its uses; a motif's choice only matters when some edge picks it, so
    /// counting goes over which motifs are in use (inclusion–exclusion over the motif set).
    pub fn architectures(&self) -> BigUint {
        let motifs = self.motifs();
        // Edge "weight" = the number of allowed candidates it may take given which motifs
        // are available.
        let cell_count = |ci: usize, available: &dyn Fn(usize) -> bool| -> BigUint {
            let cell = &self.cells[ci];
            let w = |_: usize| -> BigUint {
                BigUint::from(
                    cell.allowed()
                        .filter(|c| match c {
                            Candidate::Op(_) => true,
                            Candidate::Cell(m) => available(*m),
                        })
                        .count(),
                )
            };
            let mut total = BigUint::one();
            for node in cell.inputs..cell.states() {
                let ws: Vec<BigUint> = cell.incoming(node).map(w).collect();
                total *= match cell.rule {
                    Rule::ArgmaxPerEdge => ws.iter().product(),
                    Rule::TopK { per_node, .. } => elementary_symmetric(&ws, per_node),
                };
            }
            total
        };
        let slot_count = |available: &dyn Fn(usize) -> bool| -> BigUint {
            self.slots
                .iter()
                .map(|s| {
                    BigUint::from(
                        s.candidates
                            .iter()
                            .filter(|c| match c {
                                Candidate::Op(_) => true,
                                Candidate::Cell(m) => available(*m),
                            })
                            .count(),
                    )
                })
                .product()
        };
        let base: Vec<usize> = self.skeleton_cells.clone();
        // Sum over sets U of motifs in use of #assignments using exactly U, by
        // inclusion–exclusion: Σ_{V ⊆ U} (−1)^{|U∖V|} f(V), where f(V) counts assignments of
        // the skeleton cells and of the motifs in U that pick motifs only from V.
        let m = motifs.len();
        assert!(m <= 16, "motif count is limited at compile time");
        let f = |u_mask: usize, v_mask: usize| -> BigUint {
            let available = |cell: usize| {
                motifs
                    .iter()
                    .position(|&x| x == cell)
                    .is_some_and(|i| v_mask >> i & 1 == 1)
            };
            let mut total = slot_count(&available);
            for &c in &base {
                total *= cell_count(c, &available);
            }
            for (i, &c) in motifs.iter().enumerate() {
                if u_mask >> i & 1 == 1 {
                    total *= cell_count(c, &available);
                }
            }
            total
        };
        let mut positive = BigUint::zero();
        let mut negative = BigUint::zero();
        for u in 0..(1usize << m) {
            // Subsets V of U.
            let mut v = u;
            loop {
                let term = f(u, v);
                if (u ^ v).count_ones() % 2 == 0 {
                    positive += term;
                } else {
                    negative += term;
                }
                if v == 0 {
                    break;
                }
                v = (v - 1) & u;
            }
        }
        positive - negative
    }
}

/// e_k(w): the sum over k-subsets of the product of their weights.
fn elementary_symmetric(w: &[BigUint], k: usize) -> BigUint {
    let mut e = vec![BigUint::zero(); k + 1];
    e[0] = BigUint::one();
    for x in w {
        for j in (1..=k).rev() {
            let add = &e[j - 1] * x;
            e[j] += add;
        }
    }
    e[k].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementary_symmetric_polynomials() {
        let w: Vec<BigUint> = [7u32, 7, 7].iter().map(|&x| BigUint::from(x)).collect();
        assert_eq!(elementary_symmetric(&w, 2), BigUint::from(3u32 * 49));
        assert_eq!(elementary_symmetric(&w, 3), BigUint::from(343u32));
        assert_eq!(elementary_symmetric(&w[..1], 2), BigUint::zero());
    }
}
