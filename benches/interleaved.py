#!/usr/bin/env python3
"""NeuroFlux against backpropagation on the CPU, interleaved: our BP, PyTorch BP, NeuroFlux.

One round runs, back to back and with the same thread count, for each precision of
`--precisions` (f32, bf16): `nf train --mode bp --precision P` (the same engine, the same
budget), PyTorch BP (`benches/pytorch_fmnist.py`, the same model, optimiser, schedule and
epochs, at the batch size that our BP run of this round and precision reports in report.json;
`--precision bf16` there is `torch.autocast("cpu", dtype=torch.bfloat16)`) and
`nf train --mode neuroflux --precision P`. Rounds repeat A B C A B C ..., so that the machine's
drift (10-15% over minutes on shared machines) hits every system alike; only ratios within a
round are compared. `--step-threads 1,2` also runs, at the start of every round,
benches/compare_pytorch.py's BP training step (batch 128) for each thread count and precision,
ours then PyTorch's. Prints every run, then each ratio (NeuroFlux / our BP, NeuroFlux /
PyTorch in each precision, our BP / PyTorch) with its min / median / max over the rounds, and
the accuracies; writes all records to --out/interleaved.json after every round.
`--variant LABEL=FLAGS` (repeatable) runs several NeuroFlux configurations in every round, e.g.

    python3 benches/interleaved.py --rounds 3 --threads 2 \\
        --python /tmp/torchvenv/bin/python --out /tmp/interleaved \\
        --variant "pool0=--head-pool 0" --variant "pool4=--head-pool 4"

    python3 benches/interleaved.py --rounds 2 --threads 2 --precisions f32,bf16 \\
        --step-threads 1,2 --python /tmp/torchvenv/bin/python --out /tmp/ilv-prec

Epochs: BP (ours and PyTorch) trains the whole model `--epochs` times over the training split;
NeuroFlux trains each block `--epochs` times over it (so every unit is trained on the same
number of images in both). Wall time is `seconds_total` of report.json for nf (training, the
per-block evaluation and cache passes, model files) and the whole training loop plus the test
pass for PyTorch (data loading excluded for both); every ratio is also given in CPU seconds
(user + system of the whole child process, data loading included: the comparable figure when
other jobs share the machine). Without a torch-capable --python the
PyTorch runs are skipped and said so. The nf binary is target/release/nf (built by
`cargo build --release -p nf-host --bin nf` first).
"""
import argparse, json, os, resource, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd, **kw):
    """stdout, wall seconds and CPU seconds (user + system) of `cmd`."""
    t0, c0 = time.perf_counter(), child_cpu()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"interleaved: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout, time.perf_counter() - t0, child_cpu() - c0


def nf_run(a, mode, out, extra, precision, label=None):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [a.nf, "train", "--data", a.data, "--budget", a.budget, "--epochs", str(a.epochs),
           "--threads", str(a.threads), "--mode", mode, "--precision", precision, "--out", out] + extra
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    _, wall, cpu = run(cmd)
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    rec = {"system": f"nf-{label or mode}", "precision": r["precision"], "seconds": r["seconds_total"],
           "process_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
           "test_acc": r["test_acc"], "exit_acc": r["exit"]["test_acc"], "exit_unit": r["exit"]["unit"],
           "exit_params": r["exit"]["params"], "full_params": r["full_params"],
           "batches": [b["batch_size"] for b in r["blocks"]],
           "epochs": [len(b["epochs"]) for b in r["blocks"]], "train_samples": r["samples"]["train"],
           "train_seconds": sum(b["train_seconds"] for b in r["blocks"]),
           "peak_rss_bytes": r.get("peak_rss_bytes"), "planned_total_bytes": r.get("planned_total_bytes")}
    shutil.rmtree(out, ignore_errors=True)
    return rec


def torch_run(a, precision, batch):
    cmd = [a.python, os.path.join(ROOT, "benches", "pytorch_fmnist.py"), "--data", a.data, "--threads",
           str(a.threads), "--epochs", str(a.epochs), "--batch", str(batch), "--precision", precision]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    out, wall, cpu = run(cmd, env=env)
    t = json.loads(out.strip().splitlines()[-1])
    return {"system": "pytorch-bp", "precision": precision, "seconds": t["seconds_total"],
            "process_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "test_acc": t["test_acc"], "train_seconds": t["train_seconds"],
            "batches": [batch], "epochs": [t["epochs"]], "train_samples": t["train_samples"]}


def torch_ok(python):
    if not python:
        return False
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def step_round(a, row):
    """compare_pytorch.py's BP step (batch 128), ours then PyTorch's, per thread count and precision."""
    if os.path.join(ROOT, "benches") not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, "benches"))
    import compare_pytorch as cp
    for t in [int(v) for v in a.step_threads.split(",")]:
        for p in a.precisions.split(","):
            ours = cp.ours_rate(t, a.step_steps, [a.step_bench], p)
            theirs = cp.pytorch_child(t, 128, a.step_steps, p, a.python)
            row[f"step/{t}/{p}"] = {"neuroflux": ours, "pytorch": theirs}
            print(f"round {row['round']} BP step T={t} {p:4}: NeuroFlux {ours:7.1f} img/s, PyTorch {theirs:7.1f} img/s",
                  flush=True)


def step_bench_path():
    """The train_steps bench binary, built by `cargo bench --no-run`."""
    out = subprocess.run(["cargo", "bench", "--no-run", "--bench", "train_steps", "--message-format", "json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_steps" and m.get("executable"):
            return m["executable"]
    sys.exit("interleaved: no train_steps bench binary")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--budget", default="32MiB")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=0, help="first N training and test images (nf train --limit)")
    ap.add_argument("--precisions", default="f32", help="comma-separated, of f32,bf16 (default f32)")
    ap.add_argument("--step-threads", default="", help="also compare the BP step at these thread counts, e.g. 1,2")
    ap.add_argument("--step-steps", type=int, default=20, help="timed BP steps per step run (default 20)")
    ap.add_argument("--no-end-to-end", action="store_true", help="only the BP step comparison")
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
    precs = a.precisions.split(",")
    for p in precs:
        if p not in ("f32", "bf16"):
            sys.exit(f"error: --precisions: no precision {p} (f32, bf16)")
    with_torch = torch_ok(a.python)
    if not with_torch:
        print("interleaved: no --python with torch: PyTorch runs skipped", file=sys.stderr)
    if a.step_threads:
        if not with_torch:
            sys.exit("error: --step-threads needs --python with torch")
        a.step_bench = step_bench_path()
        os.chdir(ROOT)
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split()) for v in a.variant] or [("neuroflux", [])]
    nf_keys = [f"nf:{v}/{p}" for p in precs for v, _ in variants]
    records = []
    for r in range(a.rounds):
        row = {"round": r + 1}
        if a.step_threads:
            step_round(a, row)
        for p in precs if not a.no_end_to_end else []:
            row[f"bp/{p}"] = nf_run(a, "bp", os.path.join(a.out, "bp"), extra, p)
            if with_torch:
                # PyTorch trains at the batch our BP run of this round and precision used.
                row[f"pytorch/{p}"] = torch_run(a, p, row[f"bp/{p}"]["batches"][0])
            for label, flags in variants:
                row[f"nf:{label}/{p}"] = nf_run(a, "neuroflux", os.path.join(a.out, "nf"), extra + flags, p, label)
            for k in [f"bp/{p}", f"pytorch/{p}"] + [f"nf:{v}/{p}" for v, _ in variants]:
                if k in row:
                    x = row[k]
                    print(f"round {r + 1} {x['system']:<14} {p:4} {x['seconds']:7.1f} s (train {x['train_seconds']:6.1f} s,"
                          f" CPU {x['cpu_seconds']:6.1f} s)"
                          f"  test {100 * x['test_acc']:.2f}%"
                          + (f"  exit unit {x['exit_unit']} {100 * x['exit_acc']:.2f}%" if "exit_acc" in x else "")
                          + f"  batches {x['batches']} epochs {x['epochs']} of {x['train_samples']} images", flush=True)
        records.append(row)
        with open(os.path.join(a.out, "interleaved.json"), "w") as f:
            json.dump({"args": vars(a), "rounds": records}, f, indent=1)

    def stats(name, vals):
        return f"{name:<34} min {min(vals):.3f}  median {statistics.median(vals):.3f}  max {max(vals):.3f}"

    def ratios(name, num, den):
        """Wall (seconds) and whole-process CPU-second ratios within each round."""
        print(stats(name, [x[num]["seconds"] / x[den]["seconds"] for x in records]))
        print(stats(name + " (CPU s)", [x[num]["cpu_seconds"] / x[den]["cpu_seconds"] for x in records]))

    if a.step_threads:
        print(f"\nBP step, batch 128, {a.step_steps} steps per run, {a.rounds} rounds: best (median) img/s; ratios of the bests")
        for t in [int(v) for v in a.step_threads.split(",")]:
            best = {(s, p): max(x[f"step/{t}/{p}"][s] for x in records) for s in ("neuroflux", "pytorch") for p in precs}
            med = {(s, p): statistics.median(x[f"step/{t}/{p}"][s] for x in records) for s in ("neuroflux", "pytorch") for p in precs}
            for p in precs:
                vs = ", ".join(f"/ PyTorch {q} {best['neuroflux', p] / best['pytorch', q]:.2f}x" for q in precs)
                print(f"  T={t} {p:4}: NeuroFlux {best['neuroflux', p]:.1f} ({med['neuroflux', p]:.1f}), "
                      f"PyTorch {best['pytorch', p]:.1f} ({med['pytorch', p]:.1f}); NeuroFlux {vs}")
    if a.no_end_to_end:
        return
    print(f"\n{a.rounds} rounds, {a.threads} threads, budget {a.budget}, {a.epochs} epochs per block"
          f"{(', --limit ' + str(a.limit)) if a.limit else ''}"
          f"{(' (' + a.nf_args + ')') if a.nf_args else ''}; wall-time ratios within each round:")
    for p in precs:
        for v, _ in variants:
            k = f"nf:{v}/{p}"
            ratios(f"{v} {p} / our BP {p}", k, f"bp/{p}")
            print(stats(f"{v} {p} train / BP {p} train",
                        [x[k]["train_seconds"] / x[f"bp/{p}"]["train_seconds"] for x in records]))
            for q in precs if with_torch else []:
                ratios(f"{v} {p} / PyTorch {q}", k, f"pytorch/{q}")
        for q in precs if with_torch else []:
            ratios(f"our BP {p} / PyTorch {q}", f"bp/{p}", f"pytorch/{q}")
    print("accuracy (test, %), median over rounds; seconds, median:")
    med = lambda k, f: statistics.median(x[k][f] for x in records)
    for k in nf_keys:
        print(f"  {k[3:]}: last unit {100 * med(k, 'test_acc'):.2f}, exit {100 * med(k, 'exit_acc'):.2f} "
              f"(unit {records[-1][k]['exit_unit']}, {records[-1][k]['exit_params']} of "
              f"{records[-1][k]['full_params']} parameters), {med(k, 'seconds'):.1f} s")
    for p in precs:
        print(f"  our BP {p} {100 * med(f'bp/{p}', 'test_acc'):.2f}, {med(f'bp/{p}', 'seconds'):.1f} s"
              + (f"; PyTorch {p} {100 * med(f'pytorch/{p}', 'test_acc'):.2f}, {med(f'pytorch/{p}', 'seconds'):.1f} s"
                 if with_torch else ""))


if __name__ == "__main__":
    main()
