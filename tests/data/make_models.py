#!/usr/bin/env python3
"""Writes the tiny ONNX models the runtime and profile tests load (tests/data/*.onnx).

Needs the `onnx` and `numpy` Python packages (`pip install onnx`). The output is
deterministic: run it again and `git diff` shows nothing.

- linear.onnx: input [batch, 1, 2, 2] (dynamic batch) -> Flatten -> Gemm -> logits [batch, 3],
  W[i][j] = (i + 1) * (j + 1) / 4, b = 0; 15 parameters. Every value is exact in f32, so
  the tests derive the expected logits by hand: x = 1, 2, 3, 4 gives 7.5, 15, 22.5.
- fixed_batch.onnx: the same network with the batch fixed at 2.
- tiny_cnn.onnx: input [batch, 3, 8, 8] -> Conv 3x3 (4 channels) -> Relu ->
  GlobalAveragePool -> Flatten -> Gemm -> logits [batch, 10]; 162 parameters, seeded.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
HERE = os.path.dirname(os.path.abspath(__file__))


def save(graph, name):
    model = helper.make_model(
        graph,
        producer_name="nas-pipe tests/data/make_models.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def linear(batch):
    w = np.array([[(i + 1) * (j + 1) / 4 for j in range(3)] for i in range(4)], np.float32)
    b = np.zeros(3, np.float32)
    return helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(b, "fc.bias")],
    )


def tiny_cnn():
    rng = np.random.default_rng(7)
    conv_w = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    conv_b = (rng.standard_normal(4) * 0.1).astype(np.float32)
    fc_w = (rng.standard_normal((10, 4)) * 0.5).astype(np.float32)
    fc_b = (rng.standard_normal(10) * 0.1).astype(np.float32)
    return helper.make_graph(
        [
            helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
        ],
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(conv_w, "conv.weight"),
            numpy_helper.from_array(conv_b, "conv.bias"),
            numpy_helper.from_array(fc_w, "fc.weight"),
            numpy_helper.from_array(fc_b, "fc.bias"),
        ],
    )


if __name__ == "__main__":
    save(linear("batch"), "linear.onnx")
    save(linear(2), "fixed_batch.onnx")
    save(tiny_cnn(), "tiny_cnn.onnx")
