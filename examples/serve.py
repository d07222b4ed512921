"""Classifies images with a model written by `nas-pipe export`, in ONNX Runtime.

The preprocessing is read from the model's metadata: images are uint8, H x W or C x H x W
(`input_shape`), scaled to [0, 1] and normalised per channel with `mean` and `std`. Image
files (PNG, JPEG, BMP, WebP, GIF; Pillow) are first brought to that shape as `nas-pipe`
does: grayscale (`convert("L")`) or RGB, then the centre square resized (`resize` metadata
`Crop`, the default) or the whole image resized (`Stretch`), bicubic. `nas-pipe predict`
does the same in Rust; resized pixels can differ from it by rounding.

    python examples/serve.py MODEL.onnx IMAGE.png|IMAGE.jpg|IMAGE.npy...
    python examples/serve.py MODEL.onnx --idx-gz t10k-images-idx3-ubyte.gz --count 8

Prints one line per image: its index, class name and probability, tab-separated.
"""

import argparse
import gzip
import json

import numpy as np
import onnxruntime as ort


def read_idx_gz(path, count):
    """The first `count` arrays of a gzipped IDX file of uint8 (MNIST's format)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise SystemExit(f"{path}: not a gzipped IDX file of uint8")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    images = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return images[:count]


def read_image(path, meta):
    """An image file as the uint8 C x H x W array the model's metadata describes."""
    from PIL import Image

    c, h, w = json.loads(meta["input_shape"])
    with Image.open(path) as img:
        img = img.convert("L" if c == 1 else "RGB")
    if img.size != (w, h):
        if meta.get("resize", "Crop") == "Crop":
            side = min(img.size)
            left, top = (img.width - side) // 2, (img.height - side) // 2
            img = img.crop((left, top, left + side, top + side))
        img = img.resize((w, h), Image.BICUBIC)
    x = np.asarray(img, np.uint8)
    return x.reshape(h, w, c).transpose(2, 0, 1)


def preprocess(images, meta):
    """uint8 images -> the float32 NCHW batch the model takes."""
    c, h, w = json.loads(meta["input_shape"])
    mean = np.array(json.loads(meta["mean"]), np.float32).reshape(1, c, 1, 1)
    std = np.array(json.loads(meta["std"]), np.float32).reshape(1, c, 1, 1)
    x = np.stack(images).reshape(-1, c, h, w).astype(np.float32) / np.float32(255)
    return (x - mean) / std


def classify(model_path, images):
    """(class name, probability) of each image: a uint8 array or an image file's path."""
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    images = [read_image(i, meta) if isinstance(i, str) else i for i in images]
    classes = json.loads(meta["classes"])
    (logits,) = session.run(["logits"], {"input": preprocess(images, meta)})
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    best = logits.argmax(axis=1)
    return [
        (classes[k] if k < len(classes) else str(k), float(p[k]))
        for k, p in zip(best, probs)
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("images", nargs="*", help="image files, or .npy files of uint8 images")
    ap.add_argument("--idx-gz", help="a gzipped IDX file of uint8 images")
    ap.add_argument("--count", type=int, default=8, help="images read from --idx-gz")
    args = ap.parse_args()

    images = [np.load(p) if p.endswith(".npy") else p for p in args.images]
    if args.idx_gz:
        images.extend(read_idx_gz(args.idx_gz, args.count))
    if not images:
        ap.error("no images: give image or .npy files, or --idx-gz")
    for i, (name, p) in enumerate(classify(args.model, images)):
        print(f"{i}\t{name}\t{p:.4f}")


if __name__ == "__main__":
    main()
