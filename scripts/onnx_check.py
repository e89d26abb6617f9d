#!/usr/bin/env python3
"""Run an ONNX file written by `nf export` with onnxruntime on an IDX test set and compare it
with `nf eval`.

    onnx_check.py MODEL.onnx --data DIR [--predictions CSV --model-name NAME]
                  [--nf-acc ACC] [--acc-tolerance POINTS] [--min-agreement FRACTION]

Reads DIR/t10k-images-idx3-ubyte[.gz] and DIR/t10k-labels-idx1-ubyte[.gz] (IDX as in
MNIST/Fashion-MNIST), feeds the images as float32 pixels / 255 ([N, C, H, W], C = 1) to the
graph's input `image` in batches, and takes the argmax of `logits` (the first largest, as nf).
With `--predictions` (the CSV of `nf eval --predictions`) and `--model-name` (its `model`
column, e.g. exit.safetensors) it also measures the agreement of the predicted classes and the
largest difference of the logits. It prints one JSON object (accuracy, agreement,
max_logit_diff, classes_predicted, ...) and exits 1 when a check fails: accuracy further than --acc-tolerance
points (default 0.1) from --nf-acc, agreement under --min-agreement (default 0.995), logits
further apart than --logit-tolerance (relative, default 1e-3).

Needs numpy and onnxruntime (PyPI); `scripts/test.sh` installs them into target/pyenv.
"""
import argparse
import csv
import gzip
import json
import os
import struct
import sys

import numpy as np
import onnxruntime as ort


def read_idx(path):
    """The array of an IDX file (`.gz` or raw)."""
    for p in (path + ".gz", path):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                data = f.read()
            break
    else:
        sys.exit(f"error: {path}[.gz] not found")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"error: {path}: not a u8 IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def nf_predictions(path, model):
    """Predicted classes and logits of `model` in the CSV of `nf eval --predictions`."""
    preds, logits = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["model"] != model:
                continue
            if int(row["image"]) != len(preds):
                sys.exit(f"error: {path}: rows of {model} out of order")
            preds.append(int(row["predicted"]))
            logits.append([float(v) for k, v in row.items() if k.startswith("logit_")])
    if not preds:
        sys.exit(f"error: {path}: no rows for model {model}")
    return np.array(preds), np.array(logits, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", help="the ONNX file (nf export --onnx)")
    ap.add_argument("--data", required=True, help="directory of the IDX test set")
    ap.add_argument("--predictions", help="CSV of nf eval --predictions")
    ap.add_argument("--model-name", help="the CSV's model column to compare with")
    ap.add_argument("--nf-acc", type=float, help="nf eval's test accuracy in [0, 1]")
    ap.add_argument("--acc-tolerance", type=float, default=0.1, help="points (default 0.1)")
    ap.add_argument("--min-agreement", type=float, default=0.995)
    ap.add_argument(
        "--logit-tolerance",
        type=float,
        default=1e-3,
        help="largest logit difference, relative to the largest |logit| (at least 1); default 1e-3",
    )
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()

    images = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte"))
    labels = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte")).astype(np.int64)
    x = images.astype(np.float32) / np.float32(255.0)
    if x.ndim == 3:
        x = x[:, None, :, :]

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    if inp.name != "image" or out.name != "logits":
        sys.exit(f"error: {args.onnx}: input {inp.name!r}, output {out.name!r}")
    if list(inp.shape[1:]) != list(x.shape[1:]):
        sys.exit(f"error: {args.onnx} expects {inp.shape}, the data is {list(x.shape)}")

    logits = np.concatenate(
        [sess.run(["logits"], {"image": x[i : i + args.batch]})[0] for i in range(0, len(x), args.batch)]
    )
    pred = logits.argmax(axis=1)
    result = {
        "onnx": args.onnx,
        "images": int(len(x)),
        "accuracy": float((pred == labels).mean()),
        "classes_predicted": int(len(np.unique(pred))),
        "exit_unit": meta.get("exit_unit"),
    }
    failures = []
    if args.predictions:
        nf_pred, nf_logits = nf_predictions(args.predictions, args.model_name)
        if len(nf_pred) != len(pred):
            sys.exit(f"error: {len(nf_pred)} nf predictions for {len(pred)} images")
        result["agreement"] = float((nf_pred == pred).mean())
        result["max_logit_diff"] = float(np.abs(nf_logits - logits).max())
        scale = max(1.0, float(np.abs(nf_logits).max()))
        if result["max_logit_diff"] > args.logit_tolerance * scale:
            failures.append(f"logits differ by {result['max_logit_diff']:.3g} (> {args.logit_tolerance} x {scale:.3g})")
        if result["agreement"] < args.min_agreement:
            failures.append(f"agreement {result['agreement']:.4f} < {args.min_agreement}")
    if args.nf_acc is not None:
        result["nf_accuracy"] = args.nf_acc
        diff = 100 * abs(result["accuracy"] - args.nf_acc)
        if diff > args.acc_tolerance + 1e-9:
            failures.append(f"accuracy {result['accuracy']:.4f} is {diff:.2f} points from nf's {args.nf_acc:.4f}")
    result["failures"] = failures
    print(json.dumps(result))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
