#!/usr/bin/env python3
"""Checks an ONNX file nas-pipe exported: the full ONNX checker (with shape inference), then
one batch through ONNX Runtime on the CPU.

    onnx_check.py MODEL [--input X.f32 --expect Y.f32] [--tol T] [--batch N]

Without --input, a batch of N (default 2) random images runs and the output's shape is
checked against the graph's declared output. With --input (raw little-endian float32,
[N, C, H, W] in the graph's input shape) and --expect (raw float32, the reference output),
the largest absolute difference is printed and must be at most --tol (default 1e-4).

Prints one line `ok ...` and exits 0, or prints why and exits 1. Exits 3 when `onnx` or
`onnxruntime` cannot be imported, so callers can skip.
"""

import argparse
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - depends on the environment
    print(f"skip: {e}")
    sys.exit(3)


def dims(value_info):
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in value_info.type.tensor_type.shape.dim
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input")
    ap.add_argument("--expect")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()

    m = onnx.load(a.model)
    onnx.checker.check_model(m, full_check=True)
    in_dims = dims(m.graph.input[0])
    out_dims = dims(m.graph.output[0])
    per = in_dims[1:]
    if a.input:
        x = np.fromfile(a.input, dtype="<f4")
        n = x.size // int(np.prod(per))
        x = x.reshape([n] + per)
    else:
        n = a.batch
        x = np.random.default_rng(0).standard_normal([n] + per).astype(np.float32)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        m.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    (y,) = sess.run(None, {m.graph.input[0].name: x})
    want = [n] + [d for d in out_dims[1:]]
    if list(y.shape) != want:
        print(f"output shape {list(y.shape)}, the graph declares {out_dims} (N = {n})")
        return 1
    if not np.all(np.isfinite(y)):
        print("the output has non-finite values")
        return 1
    msg = f"ok: checker passed, onnxruntime {ort.__version__} ran a batch of {n}, output {list(y.shape)}"
    if a.expect:
        ref = np.fromfile(a.expect, dtype="<f4").reshape(y.shape)
        diff = float(np.max(np.abs(y - ref)))
        msg += f", max abs diff {diff:.3g} (max |logit| {float(np.max(np.abs(ref))):.3g})"
        if not diff <= a.tol:
            print(f"max abs diff {diff:.3g} exceeds {a.tol:g}")
            return 1
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
