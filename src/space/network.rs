//! Compiling the network skeleton: the `Stacked` (DARTS) and `Sequence` (chain) forms,
//! width and depth overrides, and shape inference through every layer.

use super::{
    Candidate, Compiler, Layer, LayerKind, MAX_LAYERS, MAX_SIZE, Pre, R, Slot, Space, eval, plural,
};
use crate::error::Diagnostic;
use crate::ops::{BnMode, Shape};
use crate::spec::space::{self as raw, At, Block};
use crate::spec::{Span, Spanned};

impl Compiler<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stacked(
        &self,
        space: &mut Space,
        stem: &Spanned<raw::Stem>,
        channels: &Spanned<u32>,
        layers: &Spanned<u32>,
        normal: &Spanned<String>,
        reduction: &Spanned<String>,
        reductions_at: &Spanned<Vec<Spanned<At>>>,
    ) -> R<Vec<Layer>> {
        let c0 = self.ov.channels.map_or(channels.value, |o| o.0);
        let n = self.ov.layers.map_or(layers.value, |o| o.0);
        if c0 == 0 || c0 as u64 > MAX_SIZE {
            let at = self.ov.channels.map_or(channels.span, |o| o.1);
            return Err(self
                .src
                .diag(
                    at,
                    format!("`channels` must be between 1 and {MAX_SIZE}, got {c0}"),
                )
                .into());
        }
        if n == 0 {
            return Err(self.err(layers.span, "`layers` must be at least 1"));
        }
        if n as usize > MAX_LAYERS {
            let at = self.ov.layers.map_or(layers.span, |o| o.1);
            return Err(self
                .src
                .diag(
                    at,
                    format!("{n} layers is more than the {MAX_LAYERS} a network may have"),
                )
                .into());
        }
        let normal_i = self.cell_index(normal)?;
        let reduce_i = self.cell_index(reduction)?;
        if space.cells[normal_i].reduction {
            return Err(self.err(
                normal.span,
                format!(
                    "`normal` names cell \"{}\", which is a reduction cell",
                    normal.value
                ),
            ));
        }
        if !space.cells[reduce_i].reduction {
            return Err(self.err(
                reduction.span,
                format!(
                    "`reduction` names cell \"{}\", which lacks `reduction: true`",
                    reduction.value
                ),
            ));
        }
        for i in [normal_i, reduce_i] {
            let c = &space.cells[i];
            if c.inputs > 2 {
                return Err(self.err(c.span, format!(
                    "cell \"{}\" takes {} inputs; a Stacked network feeds a cell the outputs of the 1 or 2 cells before it",
                    c.name, c.inputs
                )));
            }
        }
        space.skeleton_cells = vec![normal_i, reduce_i];
        space.skeleton_cells.dedup();

        let mut positions = Vec::new();
        for at in reductions_at.iter() {
            let p = match at.value {
                At::Third => n / 3,
                At::TwoThirds => 2 * n / 3,
                At::Half => n / 2,
                At::Index(i) => i,
            };
            if p >= n {
                return Err(self.err(
                    at.span,
                    format!(
                        "reduction position {p} is out of range: the network has {} (0..{n})",
                        plural(n as usize, "cell")
                    ),
                ));
            }
            if positions.contains(&p) {
                return Err(self.err(
                    at.span,
                    format!("reduction position {p} is given twice (with {n} layers)"),
                ));
            }
            positions.push(p);
        }

        let raw::Stem::ConvBn { kernel, multiplier } = stem.value;
        if kernel == 0 || kernel % 2 == 0 {
            return Err(self.err(
                stem.span,
                format!("stem kernel must be an odd number ≥ 1, got {kernel}"),
            ));
        }
        let stem_c = multiplier * c0 as f64;
        if !(stem_c >= 1.0 && (stem_c - stem_c.round()).abs() < 1e-9) {
            return Err(self.err(stem.span, format!(
                "stem channels = multiplier {multiplier} × channels {c0} = {stem_c}, which is not a whole number of channels"
            )));
        }
        let image = space.image();
        let stem_shape = crate::ops::conv_bn_cost(image, stem_c.round() as u64, kernel, 1)
            .map_err(|m| self.err(stem.span, format!("stem: {m}")))?
            .output;
        let mut out = vec![Layer {
            kind: LayerKind::ConvBn {
                kernel,
                stride: 1,
                act: raw::Act::None,
            },
            inputs: vec![],
            input_shapes: vec![image],
            output: stem_shape,
            span: stem.span,
        }];
        let (mut pp, mut p) = (0usize, 0usize);
        let mut width = c0 as u64;
        let mut reduction_prev = false;
        for i in 0..n {
            let is_red = positions.contains(&i);
            if is_red {
                width = width.saturating_mul(2);
            }
            let ci = if is_red { reduce_i } else { normal_i };
            let cell = &space.cells[ci];
            let span = if is_red { reduction.span } else { normal.span };
            let ctx = |m: String| {
                self.err(
                    span,
                    format!("cell {i} (\"{}\", width {width}): {m}", cell.name),
                )
            };
            let (srcs, pre) = if cell.inputs == 2 {
                (
                    vec![pp, p],
                    vec![
                        if reduction_prev {
                            Pre::FactorizedReduce
                        } else {
                            Pre::ReluConvBn
                        },
                        Pre::ReluConvBn,
                    ],
                )
            } else {
                (vec![p], vec![Pre::ReluConvBn])
            };
            let in_shapes: Vec<Shape> = srcs.iter().map(|&s| out[s].output).collect();
            let mut states = Vec::new();
            for (k, (&shape, &pr)) in in_shapes.iter().zip(&pre).enumerate() {
                let s = eval::preprocess(pr, shape, width, BnMode::FINAL)
                    .map_err(|m| ctx(format!("preprocessing input {k}: {m}")))?;
                states.push(s.output);
            }
            if states.windows(2).any(|w| w[0] != w[1]) {
                return Err(ctx(format!(
                    "its inputs have shapes {} and {} after preprocessing",
                    states[0], states[1]
                )));
            }
            let stride = if is_red { 2 } else { 1 };
            self.charge(ci, span)?;
            let shapes = eval::infer_cell(&space.ops, &space.cells, ci, &states, width, stride)
                .map_err(ctx)?;
            let output = eval::cell_output(cell, &shapes);
            out.push(Layer {
                kind: LayerKind::Cell {
                    cell: ci,
                    width,
                    stride,
                    pre,
                },
                inputs: srcs,
                input_shapes: in_shapes,
                output,
                span,
            });
            pp = p;
            p = out.len() - 1;
            reduction_prev = is_red;
        }
        let last = out[p].output;
        out.push(Layer {
            kind: LayerKind::Head,
            inputs: vec![p],
            input_shapes: vec![last],
            output: Shape {
                c: space.input.classes as u64,
                h: 1,
                w: 1,
            },
            span: Span::default(),
        });
        Ok(out)
    }

    pub(super) fn sequence(
        &self,
        space: &mut Space,
        span: Span,
        width: Option<&Spanned<u32>>,
        depth: Option<&Spanned<u32>>,
        blocks: &[Spanned<Block>],
    ) -> R<Vec<Layer>> {
        let scale = |ov: Option<(u32, Span)>,
                     base: Option<&Spanned<u32>>,
                     what: &str|
         -> R<Option<(u64, u64)>> {
            match (ov, base) {
                (None, _) => Ok(None),
                (Some((_, sp)), None) => Err(Box::new(self.src.diag(sp, format!(
                    "cannot override {what}: the space's Sequence network declares no nominal `{what}` to scale from"
                )))),
                (Some((v, sp)), Some(b)) => {
                    if v == 0 {
                        return Err(Box::new(self.src.diag(sp, format!("{what} must be at least 1"))));
                    }
                    if b.value == 0 {
                        return Err(self.err(b.span, format!("`{what}` must be at least 1")));
                    }
                    Ok(Some((v as u64, b.value as u64)))
                }
            }
        };
        let wscale = scale(self.ov.channels, width, "width")?;
        let dscale = scale(self.ov.layers, depth, "depth")?;

        let mut flat: Vec<&Spanned<Block>> = Vec::new();
        // Flatten repeats in order.
        fn flatten<'b>(
            b: &'b Spanned<Block>,
            out: &mut Vec<&'b Spanned<Block>>,
            count: &dyn Fn(u32, Span) -> R<u64>,
            err: &dyn Fn(Span, String) -> Box<Diagnostic>,
        ) -> R<()> {
            if let Block::Repeat(n, inner) = &b.value {
                if *n == 0 {
                    return Err(err(b.span, "Repeat count must be at least 1".into()));
                }
                for _ in 0..count(*n, b.span)? {
                    flatten(inner, out, count, err)?;
                    if out.len() > MAX_LAYERS {
                        return Err(err(
                            b.span,
                            format!("the network has more than {MAX_LAYERS} layers"),
                        ));
                    }
                }
            } else {
                out.push(b);
            }
            Ok(())
        }
        let count = |n: u32, sp: Span| self.scaled(n, dscale, sp, "repeat count");
        let err = |sp: Span, m: String| self.err(sp, m);
        for b in blocks {
            flatten(b, &mut flat, &count, &err)?;
        }
        if flat.is_empty() {
            return Err(self.err(span, "the Sequence has no blocks"));
        }

        let image = space.image();
        let mut layers: Vec<Layer> = Vec::new();
        let mut shape = image;
        for (bi, b) in flat.iter().enumerate() {
            let prev = layers.len().checked_sub(1);
            let inputs: Vec<usize> = prev.into_iter().collect();
            let ctx = |m: String| self.err(b.span, m);
            if matches!(layers.last().map(|l| &l.kind), Some(LayerKind::Head)) {
                return Err(ctx(
                    "a block follows the head; GlobalPoolLinear must be last".into(),
                ));
            }
            let push = |kind: LayerKind, output: Shape, layers: &mut Vec<Layer>| {
                layers.push(Layer {
                    kind,
                    inputs: inputs.clone(),
                    input_shapes: vec![shape],
                    output,
                    span: b.span,
                });
                output
            };
            let stride_ok = |s: u32| -> R<()> {
                if s == 1 || s == 2 {
                    Ok(())
                } else {
                    Err(ctx(format!("stride must be 1 or 2, got {s}")))
                }
            };
            shape = match &b.value {
                Block::ConvBn {
                    kernel,
                    channels,
                    stride,
                    act,
                } => {
                    stride_ok(*stride)?;
                    if *kernel == 0 || kernel % 2 == 0 {
                        return Err(ctx(format!(
                            "kernel must be an odd number ≥ 1, got {kernel}"
                        )));
                    }
                    let c = self.channels(*channels, wscale, b.span)?;
                    let a = crate::ops::conv_bn_cost(shape, c, *kernel, *stride).map_err(&ctx)?;
                    push(
                        LayerKind::ConvBn {
                            kernel: *kernel,
                            stride: *stride,
                            act: *act,
                        },
                        a.output,
                        &mut layers,
                    )
                }
                Block::BnRelu => push(LayerKind::BnRelu, shape, &mut layers),
                Block::ResidualBlock { channels, stride } => {
                    stride_ok(*stride)?;
                    let c = self.channels(*channels, wscale, b.span)?;
                    let a = eval::residual(shape, c, *stride, BnMode::FINAL).map_err(&ctx)?;
                    push(
                        LayerKind::Residual { stride: *stride },
                        a.output,
                        &mut layers,
                    )
                }
                Block::Cell(name) => {
                    let ci = self.cell_index(&Spanned {
                        value: name.clone(),
                        span: b.span,
                    })?;
                    let cell = &space.cells[ci];
                    if cell.inputs != 1 {
                        return Err(ctx(format!(
                            "cell \"{name}\" takes {} inputs; cells in a Sequence take 1",
                            cell.inputs
                        )));
                    }
                    if !space.skeleton_cells.contains(&ci) {
                        space.skeleton_cells.push(ci);
                    }
                    let stride = if cell.reduction { 2 } else { 1 };
                    let width = eval::node_width(cell, shape.c)
                        .map_err(|m| ctx(format!("cell \"{name}\": {m}")))?;
                    self.charge(ci, b.span)?;
                    let shapes =
                        eval::infer_cell(&space.ops, &space.cells, ci, &[shape], width, stride)
                            .map_err(|m| {
                                ctx(format!("cell \"{name}\" (block {bi}, input {shape}): {m}"))
                            })?;
                    let out = eval::cell_output(cell, &shapes);
                    push(
                        LayerKind::Cell {
                            cell: ci,
                            width,
                            stride,
                            pre: vec![Pre::None],
                        },
                        out,
                        &mut layers,
                    )
                }
                Block::Choice {
                    channels,
                    stride,
                    candidates,
                } => {
                    stride_ok(*stride)?;
                    let c = self.channels(*channels, wscale, b.span)?;
                    let cands = self.candidates(candidates, "Choice")?;
                    self.slot(
                        space,
                        cands,
                        candidates.span,
                        shape,
                        c,
                        *stride,
                        bi,
                        &mut layers,
                        &inputs,
                        b.span,
                    )?
                }
                Block::Stage {
                    channels,
                    layers: n,
                    stride,
                    candidates,
                } => {
                    stride_ok(*stride)?;
                    let c = self.channels(*channels, wscale, b.span)?;
                    if *n == 0 {
                        return Err(ctx("a Stage needs at least 1 layer".into()));
                    }
                    let n = self.scaled(*n, dscale, b.span, "stage layers")?;
                    let cands = self.candidates(candidates, "Stage")?;
                    let first: Vec<Candidate> = cands
                        .iter()
                        .copied()
                        .filter(|c| !matches!(c, Candidate::Op(o) if space.ops[*o].1.is_identity()))
                        .collect();
                    if first.is_empty() {
                        return Err(self.err(candidates.span, "Stage: the first layer changes shape and every candidate is an Identity"));
                    }
                    let mut s = shape;
                    if layers.len() as u64 + n > MAX_LAYERS as u64 {
                        return Err(ctx(format!(
                            "the network has more than {MAX_LAYERS} layers"
                        )));
                    }
                    for k in 0..n {
                        let inputs: Vec<usize> = layers.len().checked_sub(1).into_iter().collect();
                        let (cs, st) = if k == 0 {
                            (first.clone(), *stride)
                        } else {
                            (cands.clone(), 1)
                        };
                        s = self.slot(
                            space,
                            cs,
                            candidates.span,
                            s,
                            c,
                            st,
                            bi,
                            &mut layers,
                            &inputs,
                            b.span,
                        )?;
                    }
                    s
                }
                Block::GlobalPoolLinear => push(
                    LayerKind::Head,
                    Shape {
                        c: space.input.classes as u64,
                        h: 1,
                        w: 1,
                    },
                    &mut layers,
                ),
                Block::Repeat(..) => unreachable!("repeats are flattened above"),
            };
        }
        if !matches!(layers.last().map(|l| &l.kind), Some(LayerKind::Head)) {
            return Err(self.err(span, "a Sequence must end with GlobalPoolLinear"));
        }
        Ok(layers)
    }

    /// `v` scaled by the override ratio `by` (new / nominal), which must give a whole number.
    fn scaled(&self, v: u32, by: Option<(u64, u64)>, sp: Span, what: &str) -> R<u64> {
        match by {
            None => Ok(v as u64),
            Some((num, den)) if (v as u64 * num).is_multiple_of(den) => Ok(v as u64 * num / den),
            Some((num, den)) => Err(self.err(
                sp,
                format!(
                    "{what} {v} scaled by {num}/{den} is {}, not a whole number",
                    v as f64 * num as f64 / den as f64
                ),
            )),
        }
    }

    fn channels(&self, c: u32, by: Option<(u64, u64)>, sp: Span) -> R<u64> {
        if c == 0 {
            return Err(self.err(sp, "channels must be at least 1"));
        }
        let c = self.scaled(c, by, sp, "channels")?;
        if c > MAX_SIZE {
            return Err(self.err(
                sp,
                format!("{c} channels is more than the {MAX_SIZE} allowed"),
            ));
        }
        Ok(c)
    }

    #[allow(clippy::too_many_arguments)]
    fn slot(
        &self,
        space: &mut Space,
        cands: Vec<Candidate>,
        cand_span: Span,
        input: Shape,
        c_out: u64,
        stride: u32,
        block: usize,
        layers: &mut Vec<Layer>,
        inputs: &[usize],
        span: Span,
    ) -> R<Shape> {
        let mut out: Option<(Shape, Candidate)> = None;
        for &c in &cands {
            if let Candidate::Cell(m) = c {
                self.charge(m, cand_span)?;
            }
            let a = eval::apply_candidate(&space.ops, &space.cells, c, input, c_out, stride, space.supernet)
                .map_err(|m| self.err(cand_span, format!(
                    "candidate \"{}\" cannot map {input} to {c_out} channels at stride {stride} (block {block}): {m}",
                    space.candidate_name(c)
                )))?;
            if let Some((o, first)) = out {
                if o != a.output {
                    return Err(self.err(cand_span, format!(
                        "candidates disagree on the output shape at block {block}: \"{}\" gives {o}, \"{}\" gives {}",
                        space.candidate_name(first), space.candidate_name(c), a.output
                    )));
                }
            } else {
                out = Some((a.output, c));
            }
        }
        let Some((shape, _)) = out else {
            return Err(self.err(cand_span, "the candidate list is empty"));
        };
        let slot = space.slots.len();
        space.slots.push(Slot {
            candidates: cands,
            span: cand_span,
        });
        layers.push(Layer {
            kind: LayerKind::Choice { slot, stride },
            inputs: inputs.to_vec(),
            input_shapes: vec![input],
            output: shape,
            span,
        });
        Ok(shape)
    }
}
