"""Runs an exported model with ONNX Runtime (CPU) for tests/onnx_export.rs.

usage: run_onnx.py MODEL.onnx PIXELS.u8 N SIDE OUT.json

PIXELS.u8 holds N uint8 RGB images of SIDE x SIDE (NHWC, row-major). Checks the model with
onnx.checker (full check, with shape inference), then writes
{"logits": [[...], ...], "classes": [...], "opset": n, "ops": [...]} to OUT.json.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, pixels_path, n, side, out_path = sys.argv[1:6]
    n, side = int(n), int(side)
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    images = np.fromfile(pixels_path, dtype=np.uint8).reshape(n, side, side, 3)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": images})
    out = {
        "logits": logits.astype(np.float64).tolist(),
        "classes": json.loads(meta["classes"]),
        "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0],
        "ops": sorted({node.op_type for node in model.graph.node}),
    }
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
