#!/usr/bin/env python3
"""Augmentation on the CPU: `nf train` without and with `--augment`, back to back.

Each round runs every configuration once, in order (A B C A B C ...), so the machine's drift
hits all alike; prints each run and, per configuration, the median last-unit and exit test
accuracy and wall seconds (`seconds_total` of report.json), and the differences to the first
configuration. The default configurations are the design options of augmentation with
block-sequential training:

    plain      no augmentation
    aug-cache  --augment; blocks after the first read the cache (features of unaugmented images)
    aug-recompute  --augment --cache-budget 0; every block recomputes its inputs from the
               augmented images

    python3 benches/augment.py --epochs 10 --limit 30000 --rounds 1 --out /tmp/augment

Writes every record to --out/augment.json. The nf binary is target/release/nf.
"""
import argparse, json, os, shutil, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [
    ("plain", []),
    ("aug-cache", ["--augment"]),
    ("aug-recompute", ["--augment", "--cache-budget", "0"]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="first N training and test images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default="32MiB")
    ap.add_argument("--model", default="vgg-small")
    ap.add_argument("--nf-args", default="", help="extra flags for every run, e.g. '--pad 2'")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--nf", default=os.path.join(ROOT, "target", "release", "nf"))
    ap.add_argument("--out", default="/tmp/nf-augment")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    records = []
    for r in range(a.rounds):
        for label, flags in CONFIGS:
            out = os.path.join(a.out, f"{label}-{r}")
            shutil.rmtree(out, ignore_errors=True)
            cmd = [a.nf, "train", "--data", a.data, "--model", a.model, "--budget", a.budget,
                   "--epochs", str(a.epochs), "--threads", str(a.threads), "--out", out]
            cmd += (["--limit", str(a.limit)] if a.limit else []) + a.nf_args.split() + flags
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"augment: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
            with open(os.path.join(out, "report.json")) as f:
                rep = json.load(f)
            rec = {"config": label, "round": r, "test_acc": rep["test_acc"],
                   "exit_acc": rep["exit"]["test_acc"], "exit_unit": rep["exit"]["unit"],
                   "seconds": rep["seconds_total"],
                   "train_seconds": sum(b["train_seconds"] for b in rep["blocks"]),
                   "units": [round(100 * h["test_acc"], 2) for h in rep["heads"]]}
            records.append(rec)
            print(f"round {r} {label:14} last unit {100 * rec['test_acc']:.2f}%  exit unit "
                  f"{rec['exit_unit']} {100 * rec['exit_acc']:.2f}%  {rec['seconds']:.0f} s  "
                  f"units {rec['units']}", flush=True)
    with open(os.path.join(a.out, "augment.json"), "w") as f:
        json.dump(records, f, indent=1)
    med = lambda label, key: statistics.median(x[key] for x in records if x["config"] == label)
    base = CONFIGS[0][0]
    print(f"\nmedians over {a.rounds} round(s), {a.epochs} epochs per block:")
    for label, _ in CONFIGS:
        print(f"{label:14} last unit {100 * med(label, 'test_acc'):.2f}% "
              f"({100 * (med(label, 'test_acc') - med(base, 'test_acc')):+.2f})  exit "
              f"{100 * med(label, 'exit_acc'):.2f}%  {med(label, 'seconds'):.0f} s "
              f"({med(label, 'seconds') / med(base, 'seconds'):.2f}x)")


if __name__ == "__main__":
    main()
