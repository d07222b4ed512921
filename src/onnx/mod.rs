//! The ONNX graph builder: [`Graph`] emits nodes, initializers named by parameter path,
//! unique value names, BN folding and zero tensors with the batch taken from the input, and
//! finishes a `ModelProto` with `onnx-protobuf`. Each op's and block's lowering lives beside
//! its Candle forward (`OpModule::lower`, `ConvBn::lower`, ...) and builds through [`Graph`];
//! the walk over a whole network is `crate::nets::export`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use candle_core::{DType, Tensor, TensorId};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::MessageField;

use crate::error::{Error, Result};
use crate::nn::Shape;
use crate::nn::{BatchNorm, Store};

/// The graph input's name.
pub const INPUT: &str = "input";
/// The whole model's output: [N, classes].
pub const LOGITS: &str = "logits";
/// The output of a single op exported by [`export_op`].
pub const OUTPUT: &str = "output";
/// The symbolic batch dimension.
pub const BATCH: &str = "N";

/// How a model is exported (the pipeline's `export: Onnx(...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The default-domain opset, 17 to 21.
    pub opset: u32,
    /// Fold every BN that follows a convolution into it.
    pub fold_batch_norm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            opset: 21,
            fold_batch_norm: true,
        }
    }
}

/// The ONNX IR version that goes with a default-domain opset (the ONNX versioning table).
pub fn ir_version(opset: u32) -> Result<i64> {
    match opset {
        17 | 18 => Ok(8),
        19 | 20 => Ok(9),
        21 => Ok(10),
        _ => Err(Error::Export(format!(
            "opset {opset} is not supported (17 to 21)"
        ))),
    }
}

/// The model as protobuf bytes.
pub fn serialize(model: &ModelProto) -> Result<Vec<u8>> {
    protobuf::Message::write_to_bytes(model)
        .map_err(|e| Error::Export(format!("serializing the model: {e}")))
}

fn candle(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Export(format!("{what}: {}", crate::error::candle_message(&e)))
}

// ---- The graph builder ----

/// The geometry of a 2-D convolution (square kernel and strides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    pub dilation: usize,
    /// Channel groups (C_in for a depthwise convolution).
    pub groups: usize,
}

impl Conv {
    /// Stride and padding, no dilation, one group.
    pub fn new(stride: usize, padding: usize) -> Conv {
        Conv {
            stride,
            padding,
            dilation: 1,
            groups: 1,
        }
    }
}

/// An ONNX graph under construction for one model.
///
/// Values are named `<scope>/<OpType>` (made unique with a `_k` suffix), the scope being the
/// parameter path of the module that emits the node, so names read like the parameters.
/// Module tensors become initializers under their paths in the [`Store`] they came from.
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Parameter and buffer paths by tensor.
    paths: HashMap<TensorId, String>,
    /// Every value, initializer and node name in use.
    taken: HashSet<String>,
    /// Shared constants: int64 vectors, float scalars, zero tensors, the batch size.
    ints: HashMap<Vec<i64>, String>,
    floats: HashMap<u32, String>,
    zeros: HashMap<Shape, String>,
    batch: Option<String>,
    /// Emitted nodes by their op, inputs and attributes (serialised): the same computation
    /// asked for twice (the ReLU of a state that feeds two ops, two identical pools of one
    /// input) is emitted once.
    emitted: HashMap<Vec<u8>, String>,
    scope: String,
    fold: bool,
}

impl Graph {
    /// An empty graph whose module tensors are looked up in `store`. `fold_batch_norm`:
    /// [`Graph::conv_bn`] folds BN into the convolution.
    pub fn new(store: &Store, fold_batch_norm: bool) -> Graph {
        let paths = store
            .params()
            .into_iter()
            .chain(store.buffers())
            .map(|(n, v)| (v.as_tensor().id(), n))
            .collect();
        Graph {
            nodes: Vec::new(),
            initializers: Vec::new(),
            paths,
            taken: [INPUT, LOGITS, OUTPUT].map(String::from).into(),
            ints: HashMap::new(),
            floats: HashMap::new(),
            zeros: HashMap::new(),
            batch: None,
            emitted: HashMap::new(),
            scope: String::new(),
            fold: fold_batch_norm,
        }
    }

    /// BN is folded into the convolution before it.
    pub fn fold_batch_norm(&self) -> bool {
        self.fold
    }

    /// The nodes emitted so far.
    pub fn nodes(&self) -> &[NodeProto] {
        &self.nodes
    }

    /// Runs `f` with `name` appended to the scope (`a.b` + `c` → `a.b.c`), restoring it after.
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> Result<T>) -> Result<T> {
        let outer = self.scope.clone();
        self.scope = if outer.is_empty() {
            name.to_string()
        } else {
            format!("{outer}.{name}")
        };
        let r = f(self);
        self.scope = outer;
        r
    }

    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// The parameter path of a module tensor.
    pub fn path(&self, t: &Tensor) -> Result<String> {
        self.paths.get(&t.id()).cloned().ok_or_else(|| {
            Error::Export(format!(
                "a tensor of shape {:?} under scope \"{}\" is not in the model's store",
                t.dims(),
                self.scope
            ))
        })
    }

    /// The initializer holding a module tensor as it is, under its parameter path.
    pub fn param(&mut self, t: &Tensor) -> Result<String> {
        let name = self.path(t)?;
        if !self.initializers.iter().any(|i| i.name == name) {
            let values = values(t)?;
            self.taken.insert(name.clone());
            self.initializers
                .push(float_tensor(&name, t.dims(), values));
        }
        Ok(name)
    }

    /// A float initializer named `name` (made unique).
    pub fn initializer(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> String {
        let name = self.unique(name.to_string());
        self.initializers.push(float_tensor(&name, dims, values));
        name
    }

    /// An int64 vector constant (shared between uses).
    pub fn ints(&mut self, values: &[i64]) -> String {
        if let Some(n) = self.ints.get(values) {
            return n.clone();
        }
        let text: Vec<String> = values
            .iter()
            .map(|v| match *v {
                i64::MAX => "max".to_string(),
                v => v.to_string(),
            })
            .collect();
        let name = self.unique(format!("const.i64.{}", text.join("_")));
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::INT64 as i32,
            int64_data: values.to_vec(),
            ..TensorProto::new()
        });
        self.ints.insert(values.to_vec(), name.clone());
        name
    }

    /// A float scalar constant (shared between uses).
    pub fn scalar(&mut self, value: f32) -> String {
        if let Some(n) = self.floats.get(&value.to_bits()) {
            return n.clone();
        }
        let name = self.unique(format!("const.f32.{value}"));
        self.initializers
            .push(float_tensor(&name, &[], vec![value]));
        self.floats.insert(value.to_bits(), name.clone());
        name
    }

    /// Emits a node `op_type(inputs)` with one output, named after the scope; returns the
    /// output's name.
    ///
    /// ONNX operators are pure, so a node identical to an earlier one (op, inputs,
    /// attributes) is not emitted again: the earlier node's output is returned.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let mut node = NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            op_type: op_type.to_string(),
            attribute: attrs,
            ..NodeProto::new()
        };
        // Serialising a message built in memory cannot fail; without a key the node is
        // simply not shared.
        let key = protobuf::Message::write_to_bytes(&node).ok();
        if let Some(out) = key.as_ref().and_then(|k| self.emitted.get(k)) {
            return out.clone();
        }
        let base = if self.scope.is_empty() {
            op_type.to_string()
        } else {
            format!("{}/{op_type}", self.scope)
        };
        let out = self.unique(base);
        node.output = vec![out.clone()];
        node.name = out.clone();
        self.nodes.push(node);
        if let Some(k) = key {
            self.emitted.insert(k, out.clone());
        }
        out
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    /// min(max(x, 0), 6).
    pub fn relu6(&mut self, x: &str) -> String {
        let lo = self.scalar(0.0);
        let hi = self.scalar(6.0);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    /// The sum of one or more values: the value itself, `Add` for two, `Sum` for more.
    pub fn sum(&mut self, xs: &[String]) -> String {
        match xs {
            [x] => x.clone(),
            [a, b] => self.add(a, b),
            _ => {
                let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
                self.node("Sum", &refs, vec![])
            }
        }
    }

    pub fn concat(&mut self, xs: &[String], axis: i64) -> String {
        let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
        self.node("Concat", &refs, vec![attr_int("axis", axis)])
    }

    /// `x[:, :, from.., from..]` over the spatial axes.
    pub fn crop_start(&mut self, x: &str, from: i64) -> String {
        let starts = self.ints(&[from, from]);
        let ends = self.ints(&[i64::MAX, i64::MAX]);
        let axes = self.ints(&[2, 3]);
        self.node("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    /// Max pooling (padding never wins) or average pooling with the padding left out of the
    /// average; floor output size.
    pub fn pool(
        &mut self,
        x: &str,
        max: bool,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> String {
        let k = kernel as i64;
        let (s, p) = (stride as i64, padding as i64);
        let mut attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
        ];
        if max {
            self.node("MaxPool", &[x], attrs)
        } else {
            attrs.push(attr_int("count_include_pad", 0));
            self.node("AveragePool", &[x], attrs)
        }
    }

    /// [N, C, H, W] → [N, C]: global average pool, then flatten.
    pub fn global_avg_pool(&mut self, x: &str) -> String {
        let p = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&p], vec![attr_int("axis", 1)])
    }

    /// `x · weightᵀ + bias`, `weight` `[c_out, c_in]` and `bias` `[c_out]` module tensors.
    pub fn gemm(&mut self, x: &str, weight: &Tensor, bias: &Tensor) -> Result<String> {
        let w = self.param(weight)?;
        let b = self.param(bias)?;
        Ok(self.node("Gemm", &[x, &w, &b], vec![attr_int("transB", 1)]))
    }

    fn conv_node(&mut self, x: &str, w: &str, b: Option<&str>, dims: &[usize], c: Conv) -> String {
        let (kh, kw) = (dims[2] as i64, dims[3] as i64);
        let (s, p, d) = (c.stride as i64, c.padding as i64, c.dilation as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &[kh, kw]),
            attr_ints("strides", &[s, s]),
            attr_ints("pads", &[p, p, p, p]),
            attr_ints("dilations", &[d, d]),
            attr_int("group", c.groups as i64),
        ];
        match b {
            Some(b) => self.node("Conv", &[x, w, b], attrs),
            None => self.node("Conv", &[x, w], attrs),
        }
    }

    /// A convolution without bias by the module weight `w` [C_out, C_in / groups, k, k].
    pub fn conv(&mut self, x: &str, w: &Tensor, c: Conv) -> Result<String> {
        let wn = self.param(w)?;
        Ok(self.conv_node(x, &wn, None, w.dims(), c))
    }

    /// A convolution by `w`, then `bn` (evaluation mode): one Conv with the BN folded in
    /// when folding, else Conv then BatchNormalization.
    pub fn conv_bn(&mut self, x: &str, w: &Tensor, bn: &BatchNorm, c: Conv) -> Result<String> {
        if self.fold {
            let out = w.dim(0).map_err(candle("a convolution weight"))?;
            self.conv_folded(x, w, bn, 0..out, c)
        } else {
            let y = self.conv(x, w, c)?;
            self.batch_norm(&y, bn)
        }
    }

    /// A convolution by `w` with the channels `part` of `bn` folded in (`part.len()` is
    /// `w`'s output channels): the weight keeps `w`'s path, the bias is `<conv>.bias`.
    pub fn conv_folded(
        &mut self,
        x: &str,
        w: &Tensor,
        bn: &BatchNorm,
        part: Range<usize>,
        c: Conv,
    ) -> Result<String> {
        let path = self.path(w)?;
        let dims = w.dims().to_vec();
        if dims.first() != Some(&part.len()) {
            return Err(Error::Export(format!(
                "{path}: {} output channels, but the BN part folded in has {}",
                dims.first().copied().unwrap_or(0),
                part.len()
            )));
        }
        if self.initializers.iter().any(|i| i.name == path) {
            return Err(Error::Export(format!(
                "{path} would be folded with a BN after another use"
            )));
        }
        let (scale, shift) = bn_affine(bn)?;
        let per = dims.iter().skip(1).product::<usize>();
        let mut weight = values(w)?;
        for (o, chunk) in weight.chunks_mut(per).enumerate() {
            let s = scale[part.start + o];
            chunk.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
        }
        let bias: Vec<f32> = part.map(|ch| shift[ch] as f32).collect();
        self.taken.insert(path.clone());
        self.initializers.push(float_tensor(&path, &dims, weight));
        let bias_path = format!("{}.bias", path.strip_suffix(".weight").unwrap_or(&path));
        let b = self.initializer(&bias_path, &[dims[0]], bias);
        Ok(self.conv_node(x, &path, Some(&b), &dims, c))
    }

    /// A BatchNormalization node (evaluation mode) reading `bn`'s tensors; a BN without
    /// affine parameters reads ones and zeros named like the parameters it lacks.
    pub fn batch_norm(&mut self, x: &str, bn: &BatchNorm) -> Result<String> {
        let mean = self.param(bn.running_mean.as_tensor())?;
        let var = self.param(bn.running_var.as_tensor())?;
        let (scale, bias) = match (&bn.weight, &bn.bias) {
            (Some(w), Some(b)) => (self.param(w)?, self.param(b)?),
            _ => {
                let c = bn.running_mean.dim(0).map_err(candle("a BN"))?;
                let prefix = mean
                    .strip_suffix(".running_mean")
                    .unwrap_or(&mean)
                    .to_string();
                (
                    self.initializer(&format!("{prefix}.weight"), &[c], vec![1.0; c]),
                    self.initializer(&format!("{prefix}.bias"), &[c], vec![0.0; c]),
                )
            }
        };
        Ok(self.node(
            "BatchNormalization",
            &[x, &scale, &bias, &mean, &var],
            vec![attr_float("epsilon", bn.eps as f32)],
        ))
    }

    /// The batch size [N] of `input`, computed once.
    fn batch(&mut self) -> String {
        if let Some(b) = &self.batch {
            return b.clone();
        }
        let scope = std::mem::take(&mut self.scope);
        let b = self.node(
            "Shape",
            &[INPUT],
            vec![attr_int("start", 0), attr_int("end", 1)],
        );
        self.scope = scope;
        self.batch = Some(b.clone());
        b
    }

    /// Zeros [N, shape] (N from `input`), one tensor per shape.
    pub fn zeros(&mut self, shape: Shape) -> String {
        if let Some(z) = self.zeros.get(&shape) {
            return z.clone();
        }
        let n = self.batch();
        let rest = self.ints(&[shape.c as i64, shape.h as i64, shape.w as i64]);
        let scope = std::mem::take(&mut self.scope);
        self.scope = format!("zeros.{}x{}x{}", shape.c, shape.h, shape.w);
        let dims = self.node("Concat", &[&n, &rest], vec![attr_int("axis", 0)]);
        let value = float_tensor("value", &[1], vec![0.0]);
        let z = self.node(
            "ConstantOfShape",
            &[&dims],
            vec![AttributeProto {
                name: "value".into(),
                type_: AttributeType::TENSOR.into(),
                t: MessageField::some(value),
                ..AttributeProto::new()
            }],
        );
        self.scope = scope;
        self.zeros.insert(shape, z.clone());
        z
    }

    /// Makes `value` available as `name`: the producing node's output is renamed when
    /// `value` is a node output, else an Identity node copies it.
    pub fn rename(&mut self, value: &str, name: &str) {
        let produced = self
            .nodes
            .iter()
            .any(|n| n.output.iter().any(|o| o == value));
        if !produced {
            self.nodes.push(NodeProto {
                input: vec![value.to_string()],
                output: vec![name.to_string()],
                name: name.to_string(),
                op_type: "Identity".into(),
                ..NodeProto::new()
            });
            return;
        }
        for n in &mut self.nodes {
            for s in n.input.iter_mut().chain(n.output.iter_mut()) {
                if s == value {
                    *s = name.to_string();
                }
            }
        }
    }

    pub fn finish(
        self,
        name: &str,
        input: Shape,
        output_dims: &[String],
        output: &str,
        opts: &Options,
        props: &[(&str, String)],
    ) -> Result<ModelProto> {
        let input_dims = [
            BATCH.to_string(),
            input.c.to_string(),
            input.h.to_string(),
            input.w.to_string(),
        ];
        let graph = GraphProto {
            name: name.to_string(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(INPUT, &input_dims)],
            output: vec![value_info(output, output_dims)],
            ..GraphProto::new()
        };
        Ok(ModelProto {
            ir_version: ir_version(opts.opset)?,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opts.opset as i64,
                ..OperatorSetIdProto::new()
            }],
            producer_name: "nas-pipe".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: format!(
                "nas-pipe: the {name} network in evaluation mode{}",
                if opts.fold_batch_norm {
                    ", BN folded into convolutions"
                } else {
                    ""
                }
            ),
            graph: MessageField::some(graph),
            metadata_props: props
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.to_string(),
                    value: v.clone(),
                    ..StringStringEntryProto::new()
                })
                .collect(),
            ..ModelProto::new()
        })
    }
}

/// Evaluation-mode BN as `x · scale + shift` per channel, in f64.
fn bn_affine(bn: &BatchNorm) -> Result<(Vec<f64>, Vec<f64>)> {
    let mean = values(bn.running_mean.as_tensor())?;
    let var = values(bn.running_var.as_tensor())?;
    let c = mean.len();
    let gamma = match &bn.weight {
        Some(w) => values(w)?,
        None => vec![1.0; c],
    };
    let beta = match &bn.bias {
        Some(b) => values(b)?,
        None => vec![0.0; c],
    };
    let scale: Vec<f64> = (0..c)
        .map(|i| gamma[i] as f64 / (var[i] as f64 + bn.eps).sqrt())
        .collect();
    let shift = (0..c)
        .map(|i| beta[i] as f64 - mean[i] as f64 * scale[i])
        .collect();
    Ok((scale, shift))
}

/// A tensor's values as f32, row-major.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle("reading a parameter"))
}

fn float_tensor(name: &str, dims: &[usize], values: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::FLOAT as i32,
        float_data: values,
        ..TensorProto::new()
    }
}

/// A float32 tensor value; a dimension that is not a number is symbolic.
fn value_info(name: &str, dims: &[String]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => dimension::Value::DimValue(v),
                Err(_) => dimension::Value::DimParam(d.clone()),
            }),
            ..Dimension::new()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: MessageField::some(TensorShapeProto {
            dim,
            ..TensorShapeProto::new()
        }),
        ..type_proto::Tensor::new()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..TypeProto::new()
        }),
        ..ValueInfoProto::new()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: v,
        ..AttributeProto::new()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.to_vec(),
        ..AttributeProto::new()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::FLOAT.into(),
        f: v,
        ..AttributeProto::new()
    }
}
