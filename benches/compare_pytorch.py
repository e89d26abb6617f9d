#!/usr/bin/env python3
"""BP training-step throughput of the small VGG: NeuroFlux's fast CPU backend against PyTorch (CPU).

Same model (conv 32, M, 64, M, 128, 128, M, global average pool, linear; every conv 3x3, pad 1,
no bias, followed by batch norm and ReLU), same batch size (128), same input (1x28x28, 10
classes), same optimiser (SGD, momentum 0.9, weight decay 5e-4), same thread count. Ours comes
from `cargo bench --bench train_steps -- --bp128-only --precision P`; PyTorch's from a loop of
forward / cross-entropy / backward / step in a child process of this script with
`torch.set_num_threads(T)` and OMP_NUM_THREADS / MKL_NUM_THREADS = T. `--precisions f32,bf16`
(the default) measures both precisions: ours with the GEMMs on bf16 operands (`--precision
bf16`, as `nf train --precision bf16`), PyTorch with the forward and the loss under
`torch.autocast("cpu", dtype=torch.bfloat16)` (backward follows autocast's dtypes; master
weights and the optimiser stay f32). Every repeat runs, per thread count, ours f32, PyTorch f32,
ours bf16, PyTorch bf16 back to back (the machine's drift hits all alike); each side's best run
counts. Prints one table with the ratios against PyTorch f32 and PyTorch bf16.

PyTorch is never a test dependency: install it into a virtual environment outside the
repository, e.g.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python benches/compare_pytorch.py --threads 1,2 --precisions f32,bf16

Without torch the script says so and exits 0.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

PRECISIONS = ("f32", "bf16")


def pytorch_rate(threads, batch, steps, precision):
    """Images/s of `steps` BP steps in this process (`precision` bf16: autocast)."""
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
    bf16 = precision == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def pytorch_child(threads, batch, steps, precision, python=None):
    """`pytorch_rate` in a child process (of `python`, default this one) whose OpenMP / MKL see
    `threads` from the start."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(
        [python or sys.executable, os.path.abspath(__file__), "--worker", f"{threads},{batch},{steps},{precision}"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def ours_rate(threads, steps, cmd, precision):
    out = subprocess.run(
        cmd + ["--bp128-only", "--threads", str(threads), "--steps", str(steps), "--precision", precision],
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
    ap.add_argument("--precisions", default="f32,bf16", help="comma-separated, of f32,bf16 (default both)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side, best counts (default 2)")
    ap.add_argument(
        "--ours",
        default=None,
        help="our benchmark command (default: cargo bench -q --bench train_steps --)",
    )
    ap.add_argument("--json", default=None, help="also write every run to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        t, b, n, prec = a.worker.split(",")
        print(json.dumps({"images_per_s": pytorch_rate(int(t), int(b), int(n), prec)}))
        return
    try:
        import torch
    except ImportError:
        print("torch is not importable with this python; skipping the comparison (see --help)")
        return
    precisions = a.precisions.split(",")
    for p in precisions:
        if p not in PRECISIONS:
            sys.exit(f"error: --precisions: no precision {p} (f32, bf16)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = a.ours.split() if a.ours else ["cargo", "bench", "-q", "--bench", "train_steps", "--"]
    if not a.ours:
        # Build once, quietly, before timing anything.
        subprocess.run(["cargo", "bench", "--no-run", "-q", "--bench", "train_steps"], cwd=root, check=True)
    os.chdir(root)
    batch = 128
    threads = [int(v) for v in a.threads.split(",")]
    runs = []  # (repeat, threads, system, precision, img/s)
    for r in range(a.repeat):
        for t in threads:
            for p in precisions:
                runs.append((r, t, "neuroflux", p, ours_rate(t, a.steps, cmd, p)))
                runs.append((r, t, "pytorch", p, pytorch_child(t, batch, a.steps, p)))
                print(f"repeat {r + 1} T={t} {p:4}: NeuroFlux {runs[-2][4]:7.1f} img/s, "
                      f"PyTorch {runs[-1][4]:7.1f} img/s", file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump([dict(zip(("repeat", "threads", "system", "precision", "images_per_s"), x)) for x in runs], f,
                      indent=1)

    def best(t, system, p):
        return max(x[4] for x in runs if x[1] == t and x[2] == system and x[3] == p)

    def median(t, system, p):
        return statistics.median(x[4] for x in runs if x[1] == t and x[2] == system and x[3] == p)

    print(f"small VGG (1x28x28), BP training step, batch {batch}, best of {a.repeat} runs of {a.steps} steps"
          f" (median in parentheses); PyTorch bf16 = autocast")
    print(f"PyTorch {torch.__version__}, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    print(f"{'threads':>7} | {'precision':>9} | {'NeuroFlux img/s':>17} | {'PyTorch img/s':>17} | "
          f"{'vs PT f32':>9} | {'vs PT bf16':>10}")
    print(f"{'-' * 7}-+-{'-' * 9}-+-{'-' * 17}-+-{'-' * 17}-+-{'-' * 9}-+-{'-' * 10}")
    for t in threads:
        for p in precisions:
            o, pt = best(t, "neuroflux", p), best(t, "pytorch", p)
            vs = {q: f"{o / best(t, 'pytorch', q):.2f}x" for q in precisions}
            print(f"{t:>7} | {p:>9} | {o:>7.1f} ({median(t, 'neuroflux', p):>7.1f}) | "
                  f"{pt:>7.1f} ({median(t, 'pytorch', p):>7.1f}) | {vs.get('f32', '-'):>9} | {vs.get('bf16', '-'):>10}")
    if len(threads) > 1:
        t0, t1 = threads[0], threads[-1]
        for p in precisions:
            print(f"scaling {t0}->{t1} threads, {p}: NeuroFlux "
                  f"{best(t1, 'neuroflux', p) / best(t0, 'neuroflux', p):.2f}x, PyTorch "
                  f"{best(t1, 'pytorch', p) / best(t0, 'pytorch', p):.2f}x")


if __name__ == "__main__":
    main()
