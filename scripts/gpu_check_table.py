"""The GPU check's results (`gpu_check.py collect`): the records and logs of a work folder ->
results.json and table.txt.

The table's first lines say whether this machine could run everything (and if not, why: an old
glibc, a missing CUDA 13 library, a failed preflight, a skipped test, a stage out of time, an
interrupted check). Then the test results, the speed and memory table, the ratios, the checks
(PASS/FAIL: the exit status) and the findings (the speed targets: a missed target is a finding
about the code, not a failure of the check).
"""
import json
import os
import re

MiB = 1 << 20
# Files that come back from a GPU machine must be small; the log bundle stays under this.
MAX_BUNDLE = 15 * MiB


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def failed_tests(text):
    """Names of failed tests: "test NAME ... FAILED" lines (with --nocapture a test's output may
    split such a line) and libtest's closing "failures:" list."""
    names = set(re.findall(r"^test (\S+) \.\.\. FAILED", text, re.M))
    if "\nfailures:\n" in text:
        names.update(re.findall(r"^    (\w+)$", text.rsplit("\nfailures:\n", 1)[1], re.M))
    return sorted(names)


def test_summary(text):
    """libtest's result lines, the tests that failed, skips and the first panics of a log."""
    return {
        "results": re.findall(r"^test result: .*$", text, re.M),
        "failed": failed_tests(text),
        # A skip line may follow "test name ... " on the same line: search anywhere.
        "skipped": [m.strip() for m in re.findall(r"skipped:[^\n]*", text)][:10],
        "panics": [m.strip() for m in re.findall(r"panicked at[^\n]*\n[^\n]*", text)][:5],
        "sync_each": [m.strip() for m in re.findall(r"[^\n]*failed \(NF_CUDA_SYNC_EACH=1\)[^\n]*", text)][:5],
        "evidence": [m for m in re.findall(r"^(?:GPU|NVRTC|preflight|nccl)[^\n]*", text, re.M)][:20],
    }


def unique(msgs):
    """`msgs` without repeats, ignoring the thread names of libtest's panic lines."""
    seen, out = set(), []
    for m in msgs:
        key = re.sub(r"thread '[^']*' \(\d+\) ", "", m)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def nf_summary(run):
    """Speeds and memory of an nf run from its report."""
    rep = run.get("report")
    if run.get("status") != "ok" or not rep:
        return None
    blocks = rep.get("blocks", [])
    train_s = sum(b.get("train_seconds", 0.0) for b in blocks)
    all_s = sum(b.get("seconds", 0.0) for b in blocks)
    n_train = rep.get("samples", {}).get("train", 0) * rep.get("epochs_per_block", 1)
    mem = rep.get("memory", {})
    return {
        "batches": [b.get("batch_size") for b in blocks],
        # Every unit trained once over the training set, over the training time (first steps,
        # i.e. cuBLAS's warm-up, included).
        "train_images_per_sec": n_train / train_s if train_s > 0 else None,
        # The same over each block's whole time: training, evaluating the heads on the
        # validation and test splits and building the activation cache for the next block.
        "e2e_images_per_sec": n_train / all_s if all_s > 0 else None,
        "block_images_per_sec": [round(b.get("images_per_sec", 0.0)) for b in blocks],
        "seconds_total": rep.get("seconds_total"),
        # What the budget covers: the arena and the backend's reserve beside it.
        "plan_bytes": mem.get("budget_used_bytes"),
        "allocation_bytes": rep.get("device_allocation_bytes"),
        "cublas_workspace_bytes": rep.get("device_cublas_workspace_bytes"),
        "driver_bytes": rep.get("device_peak_bytes"),
        "libraries": rep.get("device_libraries"),
        "precision": rep.get("precision", "f32"),
        "test_acc": rep.get("test_acc"),
    }


def fmt_mib(v):
    return "-" if not isinstance(v, (int, float)) else f"{v / MiB:.1f}"


def fmt_rate(v):
    return "-" if v is None else f"{v:.0f}"


def build_results(work):
    records = {}
    rec_dir = os.path.join(work, "records")
    for name in sorted(os.listdir(rec_dir)) if os.path.isdir(rec_dir) else []:
        if name.endswith(".json"):
            d = load(os.path.join(rec_dir, name))
            if d is not None:
                records[name[:-5]] = d
    logs = os.path.join(work, "logs")
    results = {
        "environment": records.pop("environment", {}),
        "machine": records.pop("machine", {}),
        "libraries": records.pop("libraries", {}),
        "interrupted": records.pop("interrupted", None),
        "bundle": records.pop("bundle", {}),
        "preflight": test_summary(read_text(os.path.join(logs, "preflight.txt"))),
        "tests": records.pop("tests", {}),
        "skipped": [],
        "runs": {},
    }
    for part in ("nvrtc-tests", "gpu-tests", "gpu-tests-sync-each", "nccl-smoke"):
        text = read_text(os.path.join(logs, part + ".txt"))
        if text:
            results["tests"][part] = test_summary(text)
    for name, d in records.items():
        if d.get("kind") == "skipped":
            results["skipped"].append(d)
            continue
        if d.get("kind") == "nf":
            rep = load(os.path.join(d.get("dir", ""), "report.json"))
            if rep is not None:
                d["report"] = rep
            d["summary"] = nf_summary(d)
        results["runs"][name] = d
    return results


def machine_verdict(results):
    """Why this machine could not run everything (empty: it could)."""
    why = []
    m = results["machine"]
    if m.get("runs", "").startswith("no"):
        why.append(m["runs"][4:])
    libs = results["libraries"]
    for lib in libs.get("missing", []):
        why.append(f"no {lib} found")
    if not results["preflight"]["evidence"]:
        why.append("the preflight found no usable GPU (see the line below)")
    for part in ("nvrtc-tests", "gpu-tests"):
        s = results["tests"].get(part)
        if s and s["skipped"]:
            why.append(f"{part} skipped ({s['skipped'][0][:80]})")
    for s in results["skipped"]:
        why.append(f"{s.get('stage')}: {s.get('message')}")
    for name, d in results["runs"].items():
        if d.get("kind") == "nf" and d.get("status") in ("skipped", "timeout"):
            why.append(f"{name}: {d.get('message')}")
        if d.get("kind") == "torch" and d.get("error"):
            why.append(f"{name}: {str(d['error'])[:100]}")
    if results["interrupted"]:
        i = results["interrupted"]
        why.append(f"interrupted by {i.get('signal')} after {i.get('seconds')} s")
    return unique(why)


def test_lines(results, checks):
    lines = []
    tests = results["tests"]
    for part, rc_key in (("nvrtc-tests", "nvrtc_rc"), ("gpu-tests", "gpu_rc"), ("nccl-smoke", "nccl_rc")):
        s = tests.get(part, {"results": [], "failed": [], "skipped": []})
        rc = tests.get(rc_key)
        skipped = s["skipped"]
        ok = rc == 0 and not skipped and bool(s["results"]) and not s["failed"]
        verdict = "passed" if ok else ("SKIPPED" if skipped else ("NOT RUN" if rc is None else f"FAILED (exit {rc})"))
        detail = "; ".join(s["results"]) or "no result line"
        lines.append(f"{part}: {verdict}: {detail}")
        for f in s["failed"]:
            lines.append(f"  failed: {f}")
        if not ok:
            for p in unique(s.get("panics", []))[:2]:
                lines.append("  " + p.replace("\n", " | ")[:300])
        for sk in skipped[:2]:
            lines.append(f"  {sk[:150]}")
        checks.append((f"{part} ran, none skipped or failed", ok))
    rerun = tests.get("gpu-tests-sync-each")
    if rerun:
        lines.append("gpu-tests again with NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1:")
        for x in unique(rerun["sync_each"] or rerun["panics"] or rerun["results"])[:3]:
            lines.append("  " + x.replace("\n", " | ")[:300])
    return lines


# Precisions of the nf runs: f32 runs are named nf-MODE-BUDGET, bf16 runs nf-MODE-BUDGET-bf16.
PRECISIONS = ("f32", "bf16")


def nf_name(mode, bm, precision):
    return f"nf-{mode}-{bm}MiB" + ("" if precision == "f32" else f"-{precision}")


def nf_label(mode, precision):
    return f"nf {mode}" + ("" if precision == "f32" else f" {precision}")


def nf_row(bm, mode, precision, d, checks):
    s = d.get("summary")
    label = nf_label(mode, precision)
    if s is None:
        checks.append((f"{label} {bm} MiB produced a result", False))
        return (f"{bm:>5}Mi {label:<17} {'-':<20} {'-':>11} {'-':>9} {'-':>8} {'-':>9} {'-':>10} "
                f"{'-':>8}  {d.get('status')}: {str(d.get('message', ''))[:70]}")
    alloc, plan = s["allocation_bytes"], s["plan_bytes"]
    b = bm * MiB
    mem_ok = alloc is not None and plan is not None and alloc <= plan <= b
    checks.append((f"{label} {bm} MiB: allocation {fmt_mib(alloc)} <= plan {fmt_mib(plan)} <= budget {bm} MiB", mem_ok))
    # The run must have trained in the precision it was asked for.
    if s.get("precision") != precision:
        checks.append((f"{label} {bm} MiB ran in {precision} (report: {s.get('precision')})", False))
    note = "alloc <= plan <= budget" if mem_ok else "ALLOCATION OVER PLAN OR BUDGET"
    if s.get("cublas_workspace_bytes") is not None:
        note += f"; cuBLAS workspace {fmt_mib(s['cublas_workspace_bytes'])} MiB"
    if s.get("test_acc") is not None:
        note += f"; test {100 * s['test_acc']:.2f}%"
    return (f"{bm:>5}Mi {label:<17} {','.join(map(str, s['batches'])):<20} "
            f"{fmt_rate(s['train_images_per_sec']):>11} {fmt_rate(s['e2e_images_per_sec']):>9} "
            f"{fmt_mib(plan):>8} {fmt_mib(alloc):>9} {fmt_mib(s['driver_bytes']):>10} "
            f"{fmt_mib(d.get('smi_peak_bytes')):>8}  {note}")


def torch_row(bm, t, checks):
    if t.get("train_images_per_sec"):
        talloc = t.get("max_memory_allocated_timed")
        checks.append((f"PyTorch BP {bm} MiB: max_memory_allocated {fmt_mib(talloc)} <= budget {bm} MiB",
                       talloc is not None and talloc <= bm * MiB))
        return (f"{bm:>5}Mi {'pytorch bp':<17} {str(t['batch_size']):<20} "
                f"{fmt_rate(t['train_images_per_sec']):>11} {fmt_rate(t['e2e_images_per_sec']):>9} "
                f"{'-':>8} {fmt_mib(t.get('max_memory_allocated_timed')):>9} "
                f"{fmt_mib(t.get('driver_peak_bytes')):>10} {fmt_mib(t.get('smi_peak_bytes')):>8}  "
                f"{fmt_rate(t.get('steady_images_per_sec'))} img/s without its 3 warm-up steps")
    checks.append((f"PyTorch BP {bm} MiB produced a result", False))
    return (f"{bm:>5}Mi {'pytorch bp':<17} {'-':<20} {'-':>11} {'-':>9} {'-':>8} {'-':>9} {'-':>10} "
            f"{'-':>8}  {str(t.get('error', 'failed'))[:80]}")


def speed_lines(results, checks, findings):
    runs = results["runs"]
    lines = [f"{'budget':>7} {'system':<17} {'batch(es)':<20} {'train img/s':>11} {'e2e img/s':>9} "
             f"{'plan MiB':>8} {'alloc MiB':>9} {'driver MiB':>10} {'smi MiB':>8}  note"]
    budgets = sorted({d.get("budget_bytes") for d in runs.values() if d.get("budget_bytes")})
    ratios = []
    for b in budgets:
        bm = b // MiB
        nf, nf16 = {}, {}
        for precision in PRECISIONS:
            for mode in ("neuroflux", "bp"):
                name = nf_name(mode, bm, precision)
                d = runs.get(name)
                if d is not None:
                    (nf if precision == "f32" else nf16)[mode] = d.get("summary")
                    lines.append(nf_row(bm, mode, precision, d, checks))
                rerun = runs.get(f"{name}-sync-each")
                if rerun is not None:
                    lines.append(f"{'':>7} {'':<17} again on 1000 images with NF_CUDA_SYNC_EACH=1 "
                                 f"(exit {rerun.get('rc')}): {str(rerun.get('message', ''))[:150]}")
        t = runs.get(f"torch-bp-{bm}MiB")
        if t is not None:
            lines.append(torch_row(bm, t, checks))
        nfx = nf.get("neuroflux")
        tgood = t is not None and t.get("train_images_per_sec")
        if nfx and nfx["train_images_per_sec"] and tgood:
            tr = nfx["train_images_per_sec"] / t["train_images_per_sec"]
            e2e = (nfx["e2e_images_per_sec"] or 0) / t["e2e_images_per_sec"]
            steady = nfx["train_images_per_sec"] / t["steady_images_per_sec"]
            ratios.append(f"{bm} MiB: NeuroFlux / PyTorch BP: training only {tr:.2f}x, end to end {e2e:.2f}x "
                          f"(PyTorch without warm-up: {steady:.2f}x; paper: 2.3x to 6.1x)")
            if bm == 256:
                findings.append((f"speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, training only ({tr:.2f}x)", tr >= 2.3))
                findings.append((f"speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, end to end ({e2e:.2f}x)", e2e >= 2.3))
        elif bm == 256:
            findings.append(("speed: NeuroFlux vs PyTorch BP under 256 MiB measured", False))
        nbp = nf.get("bp")
        if nfx and nbp and nfx["train_images_per_sec"] and nbp["train_images_per_sec"]:
            ratios.append(f"{bm} MiB: NeuroFlux / nf BP: training only "
                          f"{nfx['train_images_per_sec'] / nbp['train_images_per_sec']:.2f}x, end to end "
                          f"{(nfx['e2e_images_per_sec'] or 0) / (nbp['e2e_images_per_sec'] or 1):.2f}x")
        if nbp and nbp["train_images_per_sec"] and tgood:
            ratios.append(f"{bm} MiB: nf BP / PyTorch BP: training only "
                          f"{nbp['train_images_per_sec'] / t['train_images_per_sec']:.2f}x (kernel efficiency)")
        for mode, label in (("neuroflux", "NeuroFlux"), ("bp", "nf BP")):
            a, h = nf.get(mode), nf16.get(mode)
            if a and h and a["train_images_per_sec"] and h["train_images_per_sec"]:
                acc = ""
                if a.get("test_acc") is not None and h.get("test_acc") is not None:
                    acc = f"; test accuracy {100 * h['test_acc']:.2f}% vs {100 * a['test_acc']:.2f}%"
                ratios.append(f"{bm} MiB: {label} bf16 / f32: training only "
                              f"{h['train_images_per_sec'] / a['train_images_per_sec']:.2f}x, end to end "
                              f"{(h['e2e_images_per_sec'] or 0) / (a['e2e_images_per_sec'] or 1):.2f}x{acc}")
    lines.append("")
    lines.append("Ratios (images/s; warm-up included on both sides):")
    lines += ["  " + r for r in ratios] or ["  (no complete pair of runs)"]
    return lines


LEGEND = [
    "train img/s: training images of one epoch over the training time (first steps included);",
    "e2e img/s: over the whole time of the blocks (nf: training, evaluation, activation cache;",
    "PyTorch: training and one evaluation pass over as many images as nf evaluates).",
    "plan: arena + the backend's reserve (nf memory.budget_used_bytes); alloc: nf's one device",
    "allocation, PyTorch's max_memory_allocated; driver: device memory in use beyond the CUDA",
    "context (kernels, cuBLAS/cuDNN, allocations); smi: nvidia-smi peak of the run, context included",
    "(- where nvidia-smi gave no number).",
]


def table(results):
    """The table's lines, the checks (name, passed) and the findings (name, met)."""
    checks, findings = [], []
    lines = ["NeuroFlux on the GPU: VGG-11, synthetic 3x32x32, one epoch per block, f32 and bf16 GEMM operands "
             "(--precision; PyTorch in FP32)"]
    why = machine_verdict(results)
    if why:
        lines.append("This machine could NOT run everything: " + "; ".join(why)[:600])
    else:
        lines.append("This machine ran everything (glibc, CUDA 13 libraries, GPU, tests, nf and PyTorch runs).")
    pre = results["preflight"]["evidence"]
    if pre:
        lines.append(pre[0])
    else:
        panics = unique(results["preflight"]["panics"])
        lines.append("preflight: FAILED: " + (panics[0].split("\n")[-1][:250] if panics else "see logs.tgz: preflight.txt"))
    libs = results["libraries"]
    if libs.get("chosen"):
        lines.append("CUDA 13 libraries linked first on the path: "
                     + ", ".join(f"{k} <- {v}" for k, v in sorted(libs["chosen"].items()))[:600])
    lines.append(f"nf and the tests ran with LD_LIBRARY_PATH={results['environment'].get('nf_library_path', '')}")
    if results["interrupted"]:
        i = results["interrupted"]
        lines.append(f"INTERRUPTED by {i.get('signal')} after {i.get('seconds')} s: what follows is what finished.")
        checks.append(("the check ran to its end", False))
    lines += test_lines(results, checks)
    lines.append("")
    lines += speed_lines(results, checks, findings)
    lines.append("")
    lines += LEGEND
    bundle = results.get("bundle", {})
    checks.append((f"logs.tgz written, under {MAX_BUNDLE // MiB} MiB ({fmt_mib(bundle.get('logs_bytes'))} MiB)",
                   bundle.get("logs_rc") == 0 and (bundle.get("logs_bytes") or MAX_BUNDLE + 1) <= MAX_BUNDLE))
    lines.append("")
    lines.append("Checks:")
    lines += [f"  {'PASS' if ok else 'FAIL'} {name}" for name, ok in checks]
    lines.append("Findings (speed targets: a miss is a finding about the code, not a failure of the check):")
    lines += [f"  {'MET' if ok else 'MISSED'} {name}" for name, ok in findings] or ["  (none measured)"]
    return lines, checks, findings, why


def collect(work, out, quiet=False):
    """Write OUT/results.json and OUT/table.txt (each through a temporary file and a rename, so
    that an interrupted write leaves the previous one); print the table unless `quiet`; 0 when
    every check passed, else 1."""
    results = build_results(work)
    lines, checks, findings, why = table(results)
    results["could_run_everything"] = not why
    results["could_not_run"] = why
    results["checks"] = [{"check": n, "passed": ok} for n, ok in checks]
    results["findings"] = [{"finding": n, "met": ok} for n, ok in findings]
    text = "\n".join(lines) + "\n"
    for name, data in (("results.json", json.dumps(results, indent=1)), ("table.txt", text)):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out, name))
    if not quiet:
        import sys

        sys.stdout.write("\n" + text)
    return 0 if checks and all(ok for _, ok in checks) else 1
