#!/usr/bin/env python3
"""NeuroFlux against backpropagation on the CPU, interleaved: our BP, PyTorch BP, NeuroFlux.

One round runs, back to back and with the same thread count, `nf train --mode neuroflux`,
`nf train --mode bp` (the same engine, the same budget) and PyTorch BP
(`benches/pytorch_fmnist.py`, the same model, optimiser, schedule and epochs, at the batch size
our BP plan gets under the budget). Rounds repeat A B C A B C ..., so that the machine's drift
(10-15% over minutes on shared machines) hits every system alike; only ratios within a round
are compared. Prints every run, then each ratio (NeuroFlux / our BP, NeuroFlux / PyTorch, our
BP / PyTorch) with its min / median / max over the rounds, and the accuracies; writes all
records to --out/interleaved.json. `--variant LABEL=FLAGS` (repeatable) runs several NeuroFlux
configurations in every round, e.g. the head-pool settings:

    python3 benches/interleaved.py --rounds 3 --threads 2 \\
        --python /tmp/torchvenv/bin/python --out /tmp/interleaved \\
        --variant "pool0=--head-pool 0" --variant "pool4=--head-pool 4"

Wall time is `seconds_total` of report.json for nf (training, the per-block evaluation and
cache passes, model files) and the whole training loop plus the test pass for PyTorch (data
loading excluded for both). Without a torch-capable --python the PyTorch runs are skipped and
said so. The nf binary is target/release/nf (built by `cargo build --release` first).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"interleaved: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout, time.perf_counter() - t0


def nf_run(a, mode, out, extra, label=None):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [a.nf, "train", "--data", a.data, "--budget", a.budget, "--epochs", str(a.epochs),
           "--threads", str(a.threads), "--mode", mode, "--out", out] + extra
    _, wall = run(cmd)
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    rec = {"system": f"nf-{label or mode}", "seconds": r["seconds_total"], "process_seconds": round(wall, 1),
           "test_acc": r["test_acc"], "exit_acc": r["exit"]["test_acc"], "exit_unit": r["exit"]["unit"],
           "exit_params": r["exit"]["params"], "full_params": r["full_params"],
           "batches": [b["batch_size"] for b in r["blocks"]],
           "train_seconds": sum(b["train_seconds"] for b in r["blocks"]),
           "peak_rss_bytes": r.get("peak_rss_bytes"), "planned_total_bytes": r.get("planned_total_bytes")}
    shutil.rmtree(out, ignore_errors=True)
    return rec


def torch_ok(python):
    if not python:
        return False
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--budget", default="32MiB")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--nf", default=os.path.join(ROOT, "target", "release", "nf"))
    ap.add_argument("--python", default=None, help="a python with torch (PyTorch BP runs)")
    ap.add_argument("--out", default="/tmp/nf-interleaved")
    ap.add_argument("--nf-args", default="", help="extra flags for every nf run, e.g. '--threads 2'")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                    help="a NeuroFlux variant run in every round, e.g. 'pool4=--head-pool 4' "
                         "(repeatable; default: one run with --nf-args alone)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    extra = a.nf_args.split()
    # The batch size BP gets under this budget: PyTorch trains at the same one.
    plan, _ = run([a.nf, "plan", "--json", "--mode", "bp", "--budget", a.budget, "--threads",
                   str(a.threads), "--data", a.data] + extra)
    bp_batch = json.loads(plan)["blocks"][0]["batch_size"]
    with_torch = torch_ok(a.python)
    if not with_torch:
        print("interleaved: no --python with torch: PyTorch BP runs skipped", file=sys.stderr)
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split()) for v in a.variant] or [("neuroflux", [])]
    records = []
    for r in range(a.rounds):
        row = {"round": r + 1}
        row["bp"] = nf_run(a, "bp", os.path.join(a.out, "bp"), extra)
        if with_torch:
            out, wall = run([a.python, os.path.join(ROOT, "benches", "pytorch_fmnist.py"), "--data", a.data,
                             "--threads", str(a.threads), "--epochs", str(a.epochs), "--batch", str(bp_batch)])
            t = json.loads(out.strip().splitlines()[-1])
            row["pytorch"] = {"system": "pytorch-bp", "seconds": t["seconds_total"], "process_seconds": round(wall, 1),
                              "test_acc": t["test_acc"], "train_seconds": t["train_seconds"], "batches": [bp_batch]}
        for label, flags in variants:
            row["nf:" + label] = nf_run(a, "neuroflux", os.path.join(a.out, "nf"), extra + flags, label)
        records.append(row)
        for k in ["bp", "pytorch"] + ["nf:" + v for v, _ in variants]:
            if k in row:
                x = row[k]
                print(f"round {r + 1} {x['system']:<14} {x['seconds']:7.1f} s  test {100 * x['test_acc']:.2f}%"
                      + (f"  exit unit {x['exit_unit']} {100 * x['exit_acc']:.2f}%" if "exit_acc" in x else "")
                      + f"  batches {x['batches']}", flush=True)

    def stats(name, vals):
        return f"{name:<26} min {min(vals):.3f}  median {statistics.median(vals):.3f}  max {max(vals):.3f}"

    print(f"\n{a.rounds} rounds, {a.threads} threads, budget {a.budget}, {a.epochs} epochs per block"
          f"{(' (' + a.nf_args + ')') if a.nf_args else ''}; wall-time ratios within each round:")
    for v, _ in variants:
        k = "nf:" + v
        print(stats(f"{v} / our BP", [x[k]["seconds"] / x["bp"]["seconds"] for x in records]))
        print(stats(f"{v} train / BP train", [x[k]["train_seconds"] / x["bp"]["train_seconds"] for x in records]))
        if with_torch:
            print(stats(f"{v} / PyTorch BP", [x[k]["seconds"] / x["pytorch"]["seconds"] for x in records]))
    if with_torch:
        print(stats("our BP / PyTorch BP", [x["bp"]["seconds"] / x["pytorch"]["seconds"] for x in records]))
    print("accuracy (test, %), median over rounds:")
    med = lambda k, f: statistics.median(100 * x[k][f] for x in records)
    for v, _ in variants:
        k = "nf:" + v
        print(f"  {v}: last unit {med(k, 'test_acc'):.2f}, exit {med(k, 'exit_acc'):.2f} "
              f"(unit {records[-1][k]['exit_unit']}, {records[-1][k]['exit_params']} of "
              f"{records[-1][k]['full_params']} parameters)")
    print(f"  our BP {med('bp', 'test_acc'):.2f}" + (f", PyTorch BP {med('pytorch', 'test_acc'):.2f}" if with_torch else ""))
    with open(os.path.join(a.out, "interleaved.json"), "w") as f:
        json.dump({"args": vars(a), "bp_batch": bp_batch, "rounds": records}, f, indent=1)


if __name__ == "__main__":
    main()
