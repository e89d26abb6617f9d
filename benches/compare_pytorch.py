#!/usr/bin/env python3
"""BP training-step throughput of the small VGG: NeuroFlux's fast CPU backend against PyTorch (CPU).

Same model (conv 32, M, 64, M, 128, 128, M, global average pool, linear; every conv 3x3, pad 1,
no bias, followed by batch norm and ReLU), same batch size (128), same input (1x28x28, 10
classes), same optimiser (SGD, momentum 0.9, weight decay 5e-4), same thread count. Ours comes
from `cargo bench --bench train_steps -- --bp128-only`; PyTorch's from a loop of
forward / cross-entropy / backward / step here. Each side runs `--repeat` times, alternating,
and the best run counts (the machine may be busy). Prints one table with the ratio.

PyTorch is never a test dependency: install it into a virtual environment outside the
repository, e.g.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python benches/compare_pytorch.py --threads 1,2

Without torch the script says so and exits 0.
"""
import argparse
import os
import re
import subprocess
import sys
import time


def pytorch_rate(threads, batch, steps):
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def unit(cin, cout, pool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return layers

    model = nn.Sequential(
        *unit(1, 32, True),
        *unit(32, 64, True),
        *unit(64, 128, False),
        *unit(128, 128, True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def ours_rate(threads, steps, cmd):
    out = subprocess.run(
        cmd + ["--bp128-only", "--threads", str(threads), "--steps", str(steps)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"images_per_s=([0-9.]+)", out)
    if not m:
        sys.exit(f"unexpected output from {' '.join(cmd)}:\n{out}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side, best counts (default 2)")
    ap.add_argument(
        "--ours",
        default=None,
        help="our benchmark command (default: cargo bench -q --bench train_steps --)",
    )
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch is not importable with this python; skipping the comparison (see --help)")
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = a.ours.split() if a.ours else ["cargo", "bench", "-q", "--bench", "train_steps", "--"]
    if not a.ours:
        # Build once, quietly, before timing anything.
        subprocess.run(["cargo", "bench", "--no-run", "-q", "--bench", "train_steps"], cwd=root, check=True)
    os.chdir(root)
    batch = 128
    rows = []
    for t in [int(v) for v in a.threads.split(",")]:
        ours, theirs = 0.0, 0.0
        for _ in range(a.repeat):
            ours = max(ours, ours_rate(t, a.steps, cmd))
            theirs = max(theirs, pytorch_rate(t, batch, a.steps))
        rows.append((t, ours, theirs))
    print(f"small VGG (1x28x28), BP training step, batch {batch}, best of {a.repeat} runs of {a.steps} steps")
    print(f"PyTorch {torch.__version__}, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    print(f"{'threads':>7} | {'NeuroFlux img/s':>15} | {'PyTorch img/s':>13} | {'ratio':>6}")
    print(f"{'-' * 7}-+-{'-' * 15}-+-{'-' * 13}-+-{'-' * 6}")
    for t, ours, theirs in rows:
        print(f"{t:>7} | {ours:>15.1f} | {theirs:>13.1f} | {ours / theirs:>5.2f}x")
    if len(rows) > 1:
        (t0, o0, p0), (t1, o1, p1) = rows[0], rows[-1]
        print(f"scaling {t0}->{t1} threads: NeuroFlux {o1 / o0:.2f}x, PyTorch {p1 / p0:.2f}x")


if __name__ == "__main__":
    main()
