#!/usr/bin/env python3
"""Decoding rate of PNG files: nf's image-folder loader against PIL in a Python loop.

Writes the full Fashion-MNIST (the IDX files of --idx, default /usr/share/datasets/
fashion-mnist) as 70,000 grey PNG files under --dir (train/<class>/, test/<class>/), then times,
alternating, `cargo bench --bench decode_images` (nf: header pass, then decoding on --threads
threads) and PIL decoding every file to a numpy array in one Python loop (one thread, the way a
plain PIL script or torchvision's ImageFolder without workers reads them).

Needs numpy and Pillow (e.g. python3 -m venv /tmp/pilvenv && /tmp/pilvenv/bin/pip install
numpy pillow; run with /tmp/pilvenv/bin/python).

    python3 benches/decode_images.py --dir /dev/shm/fmnist-png --threads 2 --rounds 2
"""
import argparse
import gzip
import os
import subprocess
import time

import numpy as np
from PIL import Image


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write(idx_dir, out):
    if os.path.isdir(out) and sum(len(fs) for _, _, fs in os.walk(out)) >= 70000:
        return
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = idx(os.path.join(idx_dir, f"{prefix}-images-idx3-ubyte.gz"))
        y = idx(os.path.join(idx_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        for c in range(10):
            os.makedirs(os.path.join(out, split, f"class{c}"), exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            Image.fromarray(img, "L").save(os.path.join(out, split, f"class{label}", f"{i:05}.png"))


def pil(out):
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs)
    t = time.perf_counter()
    total = 0
    for f in files:
        with Image.open(f) as im:
            total += int(np.asarray(im.convert("L"))[0, 0])
    return len(files), time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/dev/shm/fmnist-png")
    ap.add_argument("--idx", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    write(a.idx, a.dir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for r in range(a.rounds):
        out = subprocess.run(
            ["cargo", "bench", "-q", "--bench", "decode_images", "--", "--dir", a.dir,
             "--threads", str(a.threads), "--reps", "1"],
            cwd=root, check=True, capture_output=True, text=True).stdout.strip()
        print(f"round {r} nf: {out}")
        n, s = pil(a.dir)
        print(f"round {r} PIL loop: {n} images in {s:.2f} s ({n / s:.0f} images/s)")


if __name__ == "__main__":
    main()
