"""ONNX Runtime's CPU throughput on an exported model (README, "ONNX export").

usage: target/test-venv/bin/python scripts/onnx_bench.py MODEL.onnx MNIST_DIR PNG_DIR

Takes the first 256 real MNIST test digits (MNIST_DIR/t10k-images-idx3-ubyte.gz), pads them to
32x32 RGB, writes them as PNGs into PNG_DIR (for timing `predict` on the same images) and prints
ONNX Runtime's best time of 3 over the 256 in batches of 64, with the model loaded and warmed up.
"""

import gzip
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    model, mnist, out = sys.argv[1:4]
    raw = gzip.open(os.path.join(mnist, "t10k-images-idx3-ubyte.gz")).read()[16:]
    digits = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)[:256]
    images = np.zeros((256, 32, 32, 3), np.uint8)
    images[:, 2:30, 2:30, :] = digits[..., None]
    os.makedirs(out, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(os.path.join(out, f"{i:03d}.png"))
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    session.run(["logits"], {"image": images[:64]})
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for b in range(0, 256, 64):
            session.run(["logits"], {"image": images[b : b + 64]})
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"images": 256, "batch": 64, "seconds": best, "images_per_s": 256 / best}))


if __name__ == "__main__":
    main()
