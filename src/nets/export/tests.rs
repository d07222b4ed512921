//! Structure of exported models: node and initializer counts and names for the three shipped
//! spaces, BN folded and not, `Zero` edges removed. Parity with ONNX Runtime is checked by
//! the integration tests when Python has `onnx` and `onnxruntime`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use onnx_protobuf::ModelProto;
use onnx_protobuf::tensor_shape_proto::dimension;
use onnx_protobuf::type_proto;

use super::*;
use crate::nets::model::Model;
use crate::ops::{BnMode, Op};
use crate::space::genotype::{Architecture, Genotype};
use crate::space::{self, Overrides, Space};
use crate::spec::{Source, Sources, Span, Spanned};

const NB201_EXAMPLE: &str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|";
/// Every node of every cell is zero but the last, which is the identity of a zero state.
const NB201_ZEROS: &str = "|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|";

fn load(path: &str, size: Option<(u32, u32)>) -> Space {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ov = Overrides {
        input: None,
        channels: size.map(|(c, _)| (c, Span::default())),
        layers: size.map(|(_, l)| (l, Span::default())),
    };
    space::load(&mut Sources::default(), &root.join(path), None, &ov).unwrap()
}

fn arch(s: &Space, g: &str) -> Architecture {
    let (src, genotype) = Genotype::from_arg(g, s).unwrap();
    genotype.resolve(&src, s).unwrap()
}

fn chain_arch(s: &Space) -> Architecture {
    let layers = std::iter::once("ir_k3_e1")
        .chain((0..4).flat_map(|_| ["ir_k3_e3", "ir_k5_e6", "skip", "ir_k3_e6"]))
        .map(|l| Spanned::unspanned(l.to_string()))
        .collect();
    let g = Genotype {
        version: Spanned::unspanned(1),
        space: s.name.clone(),
        cells: Default::default(),
        layers: Spanned::unspanned(layers),
    };
    g.resolve(&Source::from_text(Path::new("g"), String::new()), s)
        .unwrap()
}

fn model(s: &Space, a: &Architecture) -> Model {
    Model::new(&s.build(a), &Device::Cpu, 0, false).unwrap()
}

fn meta(m: &Model) -> Metadata {
    let c = m.net.input.channels as usize;
    Metadata {
        spec_hash: "abc".into(),
        genotype: "Genotype()".into(),
        mean: vec![0.5; c],
        std: vec![0.25; c],
        classes: (0..m.net.input.classes).map(|i| format!("c{i}")).collect(),
        resize: None,
    }
}

fn exported(m: &Model, fold: bool) -> ModelProto {
    let opts = Options {
        fold_batch_norm: fold,
        ..Options::default()
    };
    let bytes = export(m, &meta(m), &opts).unwrap();
    protobuf::Message::parse_from_bytes(&bytes).unwrap()
}

fn count(m: &ModelProto, op: &str) -> usize {
    m.graph.node.iter().filter(|n| n.op_type == op).count()
}

fn initializers(m: &ModelProto) -> BTreeSet<String> {
    m.graph.initializer.iter().map(|i| i.name.clone()).collect()
}

fn dims(v: &onnx_protobuf::ValueInfoProto) -> Vec<String> {
    let Some(type_proto::Value::TensorType(t)) = &v.type_.value else {
        panic!("{} is not a tensor", v.name)
    };
    t.shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) => v.to_string(),
            Some(dimension::Value::DimParam(p)) => p.clone(),
            _ => "?".into(),
        })
        .collect()
}

/// Names every node reads that no node, initializer or graph input provides.
fn dangling(m: &ModelProto) -> Vec<String> {
    let mut known: BTreeSet<&str> = initializers_ref(m);
    known.insert(INPUT);
    let mut missing = Vec::new();
    for n in &m.graph.node {
        for i in &n.input {
            if !known.contains(i.as_str()) {
                missing.push(format!("{} reads {i}", n.name));
            }
        }
        known.extend(n.output.iter().map(String::as_str));
    }
    missing
}

fn initializers_ref(m: &ModelProto) -> BTreeSet<&str> {
    m.graph
        .initializer
        .iter()
        .map(|i| i.name.as_str())
        .collect()
}

/// Checks what every exported model promises, whatever the network, and that with folding
/// the initializers are the conv weights, their folded biases and the head; without, every
/// stored tensor.
fn check_common(m: &Model, folded: &ModelProto, plain: &ModelProto) {
    let classes = m.net.input.classes.to_string();
    for p in [folded, plain] {
        assert_eq!(p.ir_version, 10);
        assert_eq!(p.opset_import[0].version, 21);
        assert_eq!(p.producer_name, "nas-pipe");
        let g = &p.graph;
        assert_eq!(g.input.len(), 1);
        assert_eq!(g.input[0].name, "input");
        assert_eq!(dims(&g.input[0]), ["N", "3", "32", "32"]);
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.output[0].name, "logits");
        assert_eq!(dims(&g.output[0]), ["N".to_string(), classes.clone()]);
        assert_eq!(dangling(p), Vec::<String>::new());
        let last = g.node.last().unwrap();
        assert_eq!(
            (last.op_type.as_str(), last.output[0].as_str()),
            ("Gemm", "logits")
        );
        let names: BTreeSet<&str> = g
            .node
            .iter()
            .flat_map(|n| &n.output)
            .map(String::as_str)
            .collect();
        assert_eq!(names.len(), g.node.len(), "value names are unique");
        assert_eq!(count(p, "Identity"), 0);
        let props: Vec<&str> = p.metadata_props.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            props,
            [
                "nas_pipe_version",
                "space",
                "spec_hash",
                "genotype",
                "input_shape",
                "mean",
                "std",
                "classes"
            ]
        );
        let get = |k: &str| &p.metadata_props.iter().find(|e| e.key == k).unwrap().value;
        assert_eq!(get("input_shape"), "[3,32,32]");
        assert_eq!(get("mean"), "[0.5,0.5,0.5]");
        assert!(
            get("classes").starts_with("[\"c0\",\"c1\""),
            "{}",
            get("classes")
        );
    }
    let params = m.store.params();
    let buffers = m.store.buffers();
    let convs: BTreeSet<String> = params
        .iter()
        .filter(|(_, v)| v.rank() == 4)
        .map(|(n, _)| n.clone())
        .collect();
    let bns = buffers
        .iter()
        .filter(|(n, _)| n.ends_with(".running_mean"))
        .count();
    assert_eq!(count(plain, "Conv"), convs.len());
    assert_eq!(count(folded, "Conv"), convs.len());
    assert_eq!(count(plain, "BatchNormalization"), bns);
    // Without folding every stored tensor is an initializer under its own path.
    let plain_init = initializers(plain);
    for (n, _) in params.iter().chain(&buffers) {
        assert!(plain_init.contains(n), "{n} missing");
    }
    assert!(
        plain_init
            .iter()
            .all(|n| n.starts_with("const.") || params.iter().chain(&buffers).any(|(p, _)| p == n))
    );
    // With folding: conv weights, a bias per folded conv, the head, shared constants, and
    // the tensors of BNs that follow no convolution.
    let folded_init = initializers(folded);
    for n in &folded_init {
        let ok = n.starts_with("const.")
            || convs.contains(n)
            || n.strip_suffix(".bias")
                .is_some_and(|s| convs.contains(&format!("{s}.weight")))
            || params.iter().chain(&buffers).any(|(p, _)| p == n);
        assert!(ok, "unexpected initializer {n}");
    }
    assert!(convs.is_subset(&folded_init));
}

#[test]
fn darts_v2_structure() {
    let s = load("schemas/darts.ron", Some((4, 8)));
    let m = model(&s, &arch(&s, "DARTS_V2"));
    let (folded, plain) = (exported(&m, true), exported(&m, false));
    check_common(&m, &folded, &plain);
    // 8 cells, reductions at cells 2 and 5. A normal cell: 5 sep_conv (4 convs each) and one
    // dil_conv (2) = 22 convs; a reduction cell: 5 max pools, and its skips read node 2 at
    // stride 1 (identities). Preprocessing: two 1×1 convs, but a factorized reduce (2 convs)
    // for pre0 after a reduction (cells 3 and 6). Stem 1 conv.
    let normal = 6;
    assert_eq!(count(&plain, "Conv"), 1 + normal * 22 + 8 * 2 + 2);
    // A reduction cell's five max pools read only s0 or s1, so identical pools are emitted
    // once: two per reduction cell.
    assert_eq!(count(&plain, "MaxPool"), 2 * 2);
    assert_eq!(count(&plain, "Slice"), 2);
    // Every node sums two ops; in a reduction cell nodes 3 and 5 are the same sum
    // (skip(2) + max_pool(1)) and are emitted once.
    assert_eq!(count(&plain, "Add"), 8 * 4 - 2);
    // Each state's ReLU is shared by the ops that read it: no two Relu nodes on one value.
    let relu_inputs: Vec<&String> = plain
        .graph
        .node
        .iter()
        .filter(|n| n.op_type == "Relu")
        .map(|n| &n.input[0])
        .collect();
    let distinct: std::collections::HashSet<&&String> = relu_inputs.iter().collect();
    assert_eq!(distinct.len(), relu_inputs.len());
    assert_eq!(count(&plain, "Sum"), 0);
    // Cell outputs: concat of four nodes; factorized reduces concat their halves.
    assert_eq!(count(&plain, "Concat"), 8 + 2);
    assert_eq!(count(&folded, "BatchNormalization"), 0);
    // Every node of DARTS_V2's normal cell reads an op: no zeros anywhere.
    assert_eq!(count(&plain, "ConstantOfShape"), 0);
    assert_eq!(
        (count(&plain, "GlobalAveragePool"), count(&plain, "Gemm")),
        (1, 1)
    );
    let init = initializers(&folded);
    assert!(init.contains("layers.4.edges.1.sep_conv_3x3.2.pw.weight"));
    assert!(init.contains("layers.4.edges.1.sep_conv_3x3.2.pw.bias"));
    assert!(init.contains("layers.4.pre0.conv1.bias"));
    assert!(!init.contains("layers.4.edges.1.sep_conv_3x3.2.bn.weight"));
    assert!(initializers(&plain).contains("layers.4.edges.1.sep_conv_3x3.2.bn.running_var"));
    // Node outputs are named after the module that emits them.
    assert!(
        folded
            .graph
            .node
            .iter()
            .any(|n| n.name == "layers.4.edges.1.sep_conv_3x3.2.pw/Conv")
    );
}

#[test]
fn nb201_example_structure() {
    let s = load("schemas/nas-bench-201.ron", None);
    let m = model(&s, &arch(&s, NB201_EXAMPLE));
    let (folded, plain) = (exported(&m, true), exported(&m, false));
    check_common(&m, &folded, &plain);
    // 15 cells with three nor_conv_3x3 each, the stem, two residual blocks (conv_a, conv_b,
    // shortcut conv).
    assert_eq!(count(&plain, "Conv"), 15 * 3 + 1 + 2 * 3);
    // One avg_pool_3x3 per cell, and each residual shortcut's 2×2 pool.
    assert_eq!(count(&plain, "AveragePool"), 15 + 2);
    // Node 2 adds two ops; node 3 sums skip(0), conv(1), skip(2); the residual adds.
    assert_eq!(count(&plain, "Add"), 15 + 2);
    assert_eq!(count(&plain, "Sum"), 15);
    // BN in every conv, and the final BnRelu, which no convolution precedes.
    assert_eq!(count(&plain, "BatchNormalization"), 15 * 3 + 1 + 2 * 2 + 1);
    assert_eq!(count(&folded, "BatchNormalization"), 1);
    let pool = plain
        .graph
        .node
        .iter()
        .find(|n| n.name == "layers.1.edges.2.avg_pool_3x3/AveragePool")
        .unwrap();
    let attr = |k: &str| pool.attribute.iter().find(|a| a.name == k).unwrap();
    assert_eq!(attr("pads").ints, [1, 1, 1, 1]);
    assert_eq!(attr("count_include_pad").i, 0);
}

#[test]
fn nb201_zero_edges_emit_nothing_and_zero_states_are_constants() {
    let s = load("schemas/nas-bench-201.ron", None);
    let m = model(&s, &arch(&s, NB201_ZEROS));
    let (folded, plain) = (exported(&m, true), exported(&m, false));
    check_common(&m, &folded, &plain);
    for p in [&folded, &plain] {
        assert!(
            p.graph
                .node
                .iter()
                .all(|n| !n.name.contains(".none") && !n.name.contains("skip_connect")),
            "a none or skip edge emitted a node"
        );
        // Every cell gives zeros and emits nothing; each residual block and the final BnRelu
        // read the zeros of the stage before them.
        assert_eq!(count(p, "ConstantOfShape"), 3);
        let shapes: BTreeSet<&str> = p
            .graph
            .node
            .iter()
            .filter(|n| n.op_type == "ConstantOfShape")
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(
            shapes,
            BTreeSet::from([
                "zeros.16x32x32/ConstantOfShape",
                "zeros.32x16x16/ConstantOfShape",
                "zeros.64x8x8/ConstantOfShape"
            ])
        );
        assert_eq!(count(p, "Shape"), 1);
    }
    // The stem, then the residual blocks: 1 + 2·3 convs; no cell op.
    assert_eq!(count(&plain, "Conv"), 1 + 2 * 3);
    assert_eq!(count(&plain, "BatchNormalization"), 1 + 2 * 2 + 1);
}

#[test]
fn chain_structure() {
    let s = load("schemas/mobilenet-chain.ron", None);
    let m = model(&s, &chain_arch(&s));
    let (folded, plain) = (exported(&m, true), exported(&m, false));
    check_common(&m, &folded, &plain);
    // Two ConvBn layers; ir_k3_e1 has no expansion (2 convs), the twelve other blocks 3.
    assert_eq!(count(&plain, "Conv"), 2 + 2 + 12 * 3);
    // ReLU6: both ConvBn layers, one in ir_k3_e1, two in each other block.
    assert_eq!(count(&plain, "Clip"), 2 + 1 + 12 * 2);
    // Residual adds: layers 2 and 4 of each stage (the first changes shape, the third is
    // the skip, which emits nothing).
    assert_eq!(count(&plain, "Add"), 4 * 2);
    assert_eq!(count(&folded, "BatchNormalization"), 0);
    assert_eq!(count(&plain, "Relu"), 0);
}

#[test]
fn errors_name_what_does_not_fit() {
    let s = load("schemas/nas-bench-201.ron", None);
    let m = model(&s, &arch(&s, NB201_EXAMPLE));
    let mut bad = meta(&m);
    bad.mean.pop();
    let e = export(&m, &bad, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mean has 2 values, but the input has 3 channels"),
        "{e}"
    );
    let e = export(
        &m,
        &meta(&m),
        &Options {
            opset: 16,
            fold_batch_norm: true,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("opset 16"), "{e}");
    // A module whose tensors are not in the store it is exported with.
    let other = Store::new(&Device::Cpu, 0);
    let op = Op::ReluConvBn { kernel: 3 }
        .build(&other.root(), 4, 4, 1, BnMode::FINAL)
        .unwrap();
    let e = export_op(
        &op,
        &Store::new(&Device::Cpu, 0),
        Shape { c: 4, h: 8, w: 8 },
        &Options::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not in the model's store"), "{e}");
}

/// Every op of [`Op::ALL`] alone, at both strides, folded and not: one input, one output of
/// the op's shape, initializers under the op's parameter paths.
#[test]
fn every_op_exports_alone() {
    for op in Op::ALL {
        for stride in [1usize, 2] {
            for fold in [true, false] {
                let store = Store::new(&Device::Cpu, 1);
                let s = store.root().pp("op");
                let bn = BnMode {
                    affine: true,
                    pool_bn: true,
                };
                let m = op.build(&s, 8, 8, stride, bn).unwrap();
                let input = Shape { c: 8, h: 8, w: 8 };
                let opts = Options {
                    fold_batch_norm: fold,
                    ..Options::default()
                };
                let bytes = export_op(&m, &store, input, &opts).unwrap();
                let p: ModelProto = protobuf::Message::parse_from_bytes(&bytes).unwrap();
                let h = (8 / stride).to_string();
                assert_eq!(
                    dims(&p.graph.output[0]),
                    ["N", "8", h.as_str(), h.as_str()],
                    "{op:?}"
                );
                assert_eq!(dangling(&p), Vec::<String>::new(), "{op:?}");
                let produced = p
                    .graph
                    .node
                    .iter()
                    .any(|n| n.output.iter().any(|o| o == OUTPUT));
                assert!(
                    produced,
                    "{op:?} stride {stride}: no node writes the output"
                );
                for i in &p.graph.initializer {
                    assert!(
                        i.name.starts_with("op.") || i.name.starts_with("const."),
                        "{}",
                        i.name
                    );
                }
            }
        }
    }
}
