#!/usr/bin/env python3
"""`nf train --precision f32` against `--precision bf16`, interleaved.

Every round runs, for each thread count and mode, f32 then bf16 back to back with the same
flags (so the machine's drift hits both alike); only ratios within a round are compared. Per
run: training images/s (the blocks' training images over their `train_seconds`, from
report.json: evaluation and cache passes excluded), the same per CPU second of the nf process
(user + system time of the child, the comparable figure on a shared, loaded machine, where
the wall rate depends on the other jobs), wall `seconds_total`, and the last unit's test
accuracy. Prints every run, then per thread count and mode the bf16/f32 ratios (min / median /
max over the rounds) and the accuracies; writes all records to --out/precision.json.

    python3 benches/precision.py --rounds 3 --threads 1,2 --modes neuroflux \\
        --data /usr/share/datasets/fashion-mnist --limit 8000 --epochs 1 --out /tmp/prec

The nf binary is target/release/nf (`cargo build --release -p nf-host` first).
"""
import argparse, json, os, resource, shutil, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ["f32", "bf16"]


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def nf_run(a, mode, threads, precision, seed, out):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [a.nf, "train", "--data", a.data, "--budget", a.budget, "--epochs", str(a.epochs),
           "--threads", str(threads), "--mode", mode, "--precision", precision,
           "--seed", str(seed), "--out", out]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    cpu0 = child_cpu()
    p = subprocess.run(cmd, capture_output=True, text=True)
    cpu = child_cpu() - cpu0
    if p.returncode != 0:
        sys.exit(f"precision: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    images = sum(r["samples"]["train"] * len(b["epochs"]) for b in r["blocks"])
    train_s = sum(b["train_seconds"] for b in r["blocks"])
    return {
        "mode": mode, "threads": threads, "precision": r["precision"], "seed": seed,
        "images_per_sec": images / train_s,
        "images_per_cpu_sec": images / cpu if cpu > 0 else float("nan"),
        "train_seconds": train_s, "seconds_total": r["seconds_total"], "cpu_seconds": cpu,
        "test_acc": r["test_acc"], "exit_test_acc": r["exit"]["test_acc"],
    }


def spread(xs):
    return f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--modes", default="neuroflux")
    ap.add_argument("--seeds", default="0", help="one run per seed per round (accuracy runs)")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--budget", default="32MiB")
    ap.add_argument("--nf", default=os.path.join(ROOT, "target", "release", "nf"))
    ap.add_argument("--out", default="/tmp/nf-precision")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    threads = [int(t) for t in a.threads.split(",")]
    modes = a.modes.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    runs = []
    for rnd in range(a.rounds):
        for t in threads:
            for mode in modes:
                for seed in seeds:
                    for prec in PRECISIONS:
                        r = nf_run(a, mode, t, prec, seed, os.path.join(a.out, "run"))
                        r["round"] = rnd
                        runs.append(r)
                        print(f"round {rnd} T={t} {mode:9} seed {seed} {prec:4}: "
                              f"{r['images_per_sec']:7.1f} img/s, "
                              f"{r['images_per_cpu_sec']:7.1f} img/CPU-s, "
                              f"total {r['seconds_total']:6.1f}s, "
                              f"test {100 * r['test_acc']:.2f}%", flush=True)
    with open(os.path.join(a.out, "precision.json"), "w") as f:
        json.dump(runs, f, indent=1)
    print("\nbf16 / f32 within a round (min / median / max):")
    for t in threads:
        for mode in modes:
            pairs = {}
            for r in runs:
                if r["threads"] == t and r["mode"] == mode:
                    pairs.setdefault((r["round"], r["seed"]), {})[r["precision"]] = r
            ps = [p for p in pairs.values() if len(p) == 2]
            ratio = lambda k: [p["bf16"][k] / p["f32"][k] for p in ps]
            acc = {q: [p[q]["test_acc"] for p in ps] for q in PRECISIONS}
            print(f"T={t} {mode:9}: training img/s {spread(ratio('images_per_sec'))}, "
                  f"per CPU second {spread(ratio('images_per_cpu_sec'))}, "
                  f"seconds_total {spread(ratio('seconds_total'))}; test accuracy mean "
                  f"f32 {100 * statistics.mean(acc['f32']):.2f}%, "
                  f"bf16 {100 * statistics.mean(acc['bf16']):.2f}% over {len(ps)} pair(s)")


if __name__ == "__main__":
    main()
