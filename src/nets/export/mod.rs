//! ONNX export of the final network: a [`Model`]'s layers and cells lowered to ONNX.
//!
//! Owns the lowering of each layer, edge and cell along the shared walk
//! ([`crate::space::walk`]) ([`export`]) and the export of one op alone ([`export_op`]);
//! nodes are emitted through the builder [`crate::onnx::Graph`].
//!
//! What an exported model promises:
//! - one input `input` [N, C, H, W] and one output `logits` [N, classes], float32, the batch
//!   dimension `N` dynamic;
//! - initializers are named by the store's parameter paths
//!   (`layers.4.edges.1.sep_conv_3x3.2.pw.weight`). With BN folding (the default) a
//!   convolution's weight keeps its name, its values scaled by the BN that follows, and the
//!   convolution gains a bias named `<conv>.bias`; without folding, BatchNormalization nodes
//!   read `<bn>.weight`, `<bn>.bias`, `<bn>.running_mean` and `<bn>.running_var`. A BN with
//!   no convolution before it (a `BnRelu` layer, BN after a pool) is always a node;
//! - `Zero` edges and identities emit no node; a state whose every input is zero becomes a
//!   constant zero tensor of its shape (ConstantOfShape, the batch read from `input`);
//! - the network in evaluation mode: running BN statistics, no drop path, no auxiliary head;
//! - `metadata_props` record the nas-pipe version, the spec hash, the genotype (RON), the
//!   input shape, the normalisation mean and std and the class names (JSON arrays as
//!   strings), and for an image source the resize policy (`Crop` or `Stretch`).

#[cfg(test)]
mod tests;

use candle_core::Tensor;
use petgraph::graph::EdgeIndex;

use crate::error::{Error, Result};
use crate::nets::model::{Cell, Edge, Layer, Model};
use crate::nn::Store;
pub use crate::onnx::Options;
use crate::onnx::{BATCH, Graph, INPUT, LOGITS, OUTPUT, serialize};
use crate::ops::{OpModule, Shape};
use crate::space::discrete::{NetCell, NetEdge, NetKind, NetOp};
use crate::space::walk::{self, Keep, WalkError};

/// What the exported file records about where it comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// The hash of the spec the weights were trained under.
    pub spec_hash: String,
    /// The genotype as RON text.
    pub genotype: String,
    /// Per-channel mean and std the input is normalised with (after scaling to [0, 1]);
    /// one value per input channel each.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Class names in label order, one per logit (or none).
    pub classes: Vec<String>,
    /// How an image of another size was brought to the input size in training (`Crop` or
    /// `Stretch`), for an image source; `None` for data sets of fixed-size images.
    pub resize: Option<String>,
}

/// The whole network in evaluation mode as a serialized ONNX `ModelProto`.
///
/// # Shapes
/// `input` [N, C, H, W] (the space's input) → `logits` [N, classes].
///
/// # Errors
/// An unsupported opset, metadata that does not fit the network (mean/std per input
/// channel, one class name per logit), or a module tensor missing from the model's store.
pub fn export(model: &Model, meta: &Metadata, opts: &Options) -> Result<Vec<u8>> {
    let net = &model.net;
    let input = Shape {
        c: net.input.channels as u64,
        h: net.input.size as u64,
        w: net.input.size as u64,
    };
    let classes = net.input.classes as u64;
    for (what, v) in [("mean", &meta.mean), ("std", &meta.std)] {
        if v.len() as u64 != input.c {
            return Err(Error::Export(format!(
                "the normalisation {what} has {} values, but the input has {} channels",
                v.len(),
                input.c
            )));
        }
    }
    if !meta.classes.is_empty() && meta.classes.len() as u64 != classes {
        return Err(Error::Export(format!(
            "{} class names for {classes} logits",
            meta.classes.len()
        )));
    }
    let mut g = Graph::new(&model.store, opts.fold_batch_norm);
    let image = Value::Tensor(INPUT.to_string());
    // The Candle forward's walk: a layer reads the layers it lists, or the image.
    let last = walk::layers(&net.reads(), image, Keep::All, |i, inputs| {
        let spec = &net.layers[i];
        g.scoped(&format!("layers.{i}"), |g| {
            lower_layer(g, &model.layers[i], &spec.kind, inputs, spec.output)
        })
        .map_err(|e| match e {
            Error::Export(m) => Error::Export(format!("layer {i}: {m}")),
            e => e,
        })
    })?;
    let last = tensor(&mut g, &last);
    g.rename(&last, LOGITS);
    let mut props = vec![
        ("nas_pipe_version", env!("CARGO_PKG_VERSION").to_string()),
        ("space", net.space.clone()),
        ("spec_hash", meta.spec_hash.clone()),
        ("genotype", meta.genotype.clone()),
        ("input_shape", json(&[input.c, input.h, input.w])),
        ("mean", json(&meta.mean)),
        ("std", json(&meta.std)),
        ("classes", json(&meta.classes)),
    ];
    if let Some(r) = &meta.resize {
        props.push(("resize", r.clone()));
    }
    let model = g.finish(
        &net.space,
        input,
        &[BATCH.to_string(), classes.to_string()],
        LOGITS,
        opts,
        &props,
    )?;
    serialize(&model)
}

/// One op alone, in evaluation mode, as a serialized ONNX `ModelProto` with input `input`
/// [N, C_in, H, W] and output `output`: for checking each op's lowering against its Candle
/// forward. `store` holds the op's parameters (initializers keep their paths in it).
///
/// # Errors
/// As [`export`]; also when the op cannot run on `input`.
pub fn export_op(op: &OpModule, store: &Store, input: Shape, opts: &Options) -> Result<Vec<u8>> {
    let probe = Tensor::zeros(
        (1, input.c as usize, input.h as usize, input.w as usize),
        crate::nn::DTYPE,
        store.device(),
    )
    .and_then(|x| op.forward(&x, false))
    .map_err(candle("running the op on its input shape"))?;
    let (_, c, h, w) = probe.dims4().map_err(candle("the op's output"))?;
    let mut g = Graph::new(store, opts.fold_batch_norm);
    let y = match (op.lower(&mut g, INPUT)?, op) {
        (Some(y), _) => y,
        (None, OpModule::Zero(z)) => crate::ops::zero::lower(&mut g, input, z.c_out, z.stride),
        (None, _) => return Err(Error::Export("an op other than Zero gave no output".into())),
    };
    g.rename(&y, OUTPUT);
    let dims = [
        BATCH.to_string(),
        c.to_string(),
        h.to_string(),
        w.to_string(),
    ];
    let props = [("nas_pipe_version", env!("CARGO_PKG_VERSION").to_string())];
    serialize(&g.finish("op", input, &dims, OUTPUT, opts, &props)?)
}

// ---- The model walk ----

/// A value during the walk: a tensor in the graph, or zeros of a known shape not yet
/// materialised (what `Zero` edges and sums of them give).
#[derive(Debug, Clone)]
enum Value {
    Tensor(String),
    Zero(Shape),
}

fn lower_layer(
    g: &mut Graph,
    layer: &Layer,
    kind: &NetKind,
    inputs: Vec<Value>,
    output: Shape,
) -> Result<Value> {
    let first = inputs
        .first()
        .cloned()
        .ok_or_else(|| Error::Export("a layer without inputs".into()))?;
    Ok(match (layer, kind) {
        (Layer::ConvBn(m), _) => {
            let x = tensor(g, &first);
            Value::Tensor(m.lower(g, &x)?)
        }
        (Layer::Cell(c), NetKind::Cell(nc)) => lower_cell(g, c, nc, inputs)?,
        (Layer::Choice(e), NetKind::Choice { choice, .. }) => g
            .scoped(&choice.name, |g| lower_edge(g, e, choice, first))?
            .unwrap_or(Value::Zero(output)),
        (Layer::Residual(r), _) => {
            let x = tensor(g, &first);
            Value::Tensor(r.lower(g, &x)?)
        }
        (Layer::BnRelu(bn), _) => {
            let x = tensor(g, &first);
            let y = g.batch_norm(&x, bn)?;
            Value::Tensor(g.relu(&y))
        }
        (Layer::Head(h), _) => {
            let x = tensor(g, &first);
            Value::Tensor(h.lower_pooled(g, &x)?)
        }
        _ => {
            return Err(Error::Export(
                "the model's layer does not match its network description".into(),
            ));
        }
    })
}

/// The value's tensor in the graph, zeros materialised.
fn tensor(g: &mut Graph, v: &Value) -> String {
    match v {
        Value::Tensor(t) => t.clone(),
        Value::Zero(shape) => g.zeros(*shape),
    }
}

/// The edge's output, `None` for `Zero`. Identities pass their input through, zeros
/// included; other ops materialise a zero input first.
fn lower_edge(g: &mut Graph, e: &Edge, ne: &NetEdge, x: Value) -> Result<Option<Value>> {
    Ok(match (e, &ne.op) {
        (Edge::Zero, _) => None,
        (Edge::Op(op), _) if op.is_identity() => Some(x),
        (Edge::Op(op), _) => {
            let t = tensor(g, &x);
            op.lower(g, &t)?.map(Value::Tensor)
        }
        (Edge::Cell(c), NetOp::Cell(nc)) => Some(lower_cell(g, c, nc, vec![x])?),
        (Edge::Cell(_), NetOp::Op(_)) => {
            return Err(Error::Export(
                "a nested cell does not match its network description".into(),
            ));
        }
    })
}

/// The cell on its inputs: each node the sum of its edges' tensors (a `Zero` value when
/// every edge is zero); the output states concatenated.
fn lower_cell(g: &mut Graph, c: &Cell, nc: &NetCell, inputs: Vec<Value>) -> Result<Value> {
    let mut states = Vec::new();
    for (k, (x, p)) in inputs.into_iter().zip(&c.pre).enumerate() {
        states.push(match p {
            None => x,
            Some(m) => {
                let t = tensor(g, &x);
                Value::Tensor(g.scoped(&format!("pre{k}"), |g| m.lower(g, &t))?)
            }
        });
    }
    let states = walk::cell(
        g,
        c.dag(),
        states,
        |g, terms: &mut Vec<String>, e, x| -> Result<()> {
            let ne = nc
                .graph
                .edge_weight(EdgeIndex::new(e))
                .ok_or_else(|| Error::Export("a cell edge has no description".into()))?;
            let scope = format!("edges.{}.{}", ne.index, ne.name);
            if let Some(Value::Tensor(y)) =
                g.scoped(&scope, |g| lower_edge(g, &c.edges[e], ne, x.clone()))?
            {
                terms.push(y);
            }
            Ok(())
        },
        |g, node, mut terms| {
            Ok(match terms.len() {
                0 => Value::Zero(c.shapes[node]),
                1 => Value::Tensor(terms.remove(0)),
                _ => Value::Tensor(g.sum(&terms)),
            })
        },
    )?;
    let mut outs: Vec<Value> = c.outputs.iter().map(|&s| states[s].clone()).collect();
    if outs.len() == 1 {
        return Ok(outs.remove(0));
    }
    let parts: Vec<String> = outs.iter().map(|v| tensor(g, v)).collect();
    Ok(Value::Tensor(g.concat(&parts, 1)))
}

/// The walk's wiring errors are export errors here.
impl From<WalkError> for Error {
    fn from(e: WalkError) -> Error {
        Error::Export(e.0)
    }
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn candle(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Export(format!("{what}: {}", crate::error::candle_message(&e)))
}
