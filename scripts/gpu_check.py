#!/usr/bin/env python3
"""Helper of scripts/gpu-check.sh (standard library only, plus PyTorch for `torch`).

  gpu_check.py bundle CARGO_JSON DEST      copy the nf-cuda test executables named in cargo's
                                           --message-format=json output into DEST
  gpu_check.py record FILE KEY=TEXT|KEY:=JSON ...
                                           write one JSON object (TEXT is a string, JSON a
                                           JSON value)
  gpu_check.py record-add FILE KEY=TEXT|KEY:=JSON ...
                                           add keys to the JSON object in FILE
  gpu_check.py torch --budget BYTES --images N --eval-images M --out FILE
                                           PyTorch backpropagation baseline: the same VGG-11
                                           (conv3x3 without bias, BN, ReLU, 2x2 max-pool;
                                           global average pool + linear), the largest batch
                                           whose torch.cuda.max_memory_allocated() fits the
                                           budget; N training images (3 warm-up steps
                                           included, as nf's first steps are), then an
                                           evaluation pass over M images
  gpu_check.py collect WORK OUT            WORK/records/*.json (+ the nf reports and the test
                                           logs) -> OUT/results.json and OUT/table.txt; prints
                                           the table; exit status 1 when a check failed
  gpu_check.py bundle-logs DIR ARCHIVE     DIR's files, each cut to its last 2 MiB, into one
                                           .tgz of at most 15 MiB
"""
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time

MiB = 1 << 20
# Files that come back from a GPU machine must be small; the log bundle stays under this.
MAX_BUNDLE = 15 * MiB
LOG_TAIL = 2 * MiB


def cmd_bundle(cargo_json, dest):
    """Copy the test executables of nf-cuda's `gpu` and `nvrtc` test targets."""
    wanted = {"gpu": "nf-cuda-gpu-tests", "nvrtc": "nf-cuda-nvrtc-tests"}
    found = {}
    with open(cargo_json) as f:
        for line in f:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
                continue
            target = msg.get("target", {})
            if "nf-cuda" in msg.get("package_id", "") and target.get("name") in wanted:
                found[target["name"]] = msg["executable"]
    missing = sorted(set(wanted) - set(found))
    if missing:
        sys.exit(f"gpu_check.py bundle: no executable for test target(s) {missing}")
    for name, exe in found.items():
        shutil.copy2(exe, os.path.join(dest, wanted[name]))
        print(f"  {wanted[name]} <- {exe}")


def parse_pairs(pairs):
    """KEY=TEXT (a string) and KEY:=JSON (a JSON value; text that does not parse stays text)."""
    d = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        if k.endswith(":"):
            try:
                d[k[:-1]] = json.loads(v)
            except ValueError:
                d[k[:-1]] = v
        else:
            d[k] = v
    return d


def cmd_record(path, pairs, add=False):
    d = {}
    if add and os.path.exists(path):
        with open(path) as f:
            d = json.load(f)
    d.update(parse_pairs(pairs))
    with open(path, "w") as f:
        json.dump(d, f, indent=1)


def mapped_libraries():
    """CUDA libraries this process mapped (driver, runtime, cuBLAS, cuDNN, NVRTC)."""
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split()[5] for line in f if len(line.split()) >= 6]
    except OSError:
        return []
    keep = ("libcuda.so", "libcudart", "libcublas", "libcudnn", "libnvrtc")
    out = []
    for p in paths:
        if os.path.basename(p).startswith(keep) and p not in out:
            out.append(p)
    return out


def vgg11(classes=10):
    import torch.nn as nn

    layers, c = [], 3
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes)]
    return nn.Sequential(*layers)


def cmd_torch(budget, images, eval_images, out):
    import torch
    import torch.nn as nn

    # Full FP32, like the nf CUDA backend's default (no TF32 in cuDNN or cuBLAS).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    dev = torch.device("cuda")
    torch.cuda.init()
    free, total = torch.cuda.mem_get_info()
    used_after_context = total - free
    result = {"kind": "torch", "mode": "bp", "budget_bytes": budget, "images": images,
              "eval_images": eval_images, "torch": torch.__version__,
              "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
              "device": torch.cuda.get_device_name(0),
              "ld_library_path": os.environ.get("LD_LIBRARY_PATH", "")}
    driver_peak = [0]

    def note_driver():
        free, total = torch.cuda.mem_get_info()
        driver_peak[0] = max(driver_peak[0], total - free - used_after_context)

    def make():
        torch.manual_seed(0)
        model = vgg11().to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        return model, opt

    def step(model, opt, x, y):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def peak_at(batch):
        """torch.cuda.max_memory_allocated() of two training steps at `batch` (None: OOM)."""
        model = opt = x = y = None
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            model, opt = make()
            x = torch.randn(batch, 3, 32, 32, device=dev)
            y = torch.randint(0, 10, (batch,), device=dev)
            for _ in range(2):
                step(model, opt, x, y)
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            del model, opt, x, y
            torch.cuda.empty_cache()

    def fits(b):
        p = peak_at(b)
        return p is not None and p <= budget

    # Largest batch (a multiple of 8 from 16 up, as the nf planner rounds) that fits.
    candidates = list(range(1, 16)) + list(range(16, 8193, 8))
    if not fits(candidates[0]):
        result["error"] = "batch 1 does not fit the budget"
        json.dump(result, open(out, "w"), indent=1)
        return
    lo, hi = 0, len(candidates) - 1
    while lo < hi:  # invariant: candidates[lo] fits
        mid = (lo + hi + 1) // 2
        if fits(candidates[mid]):
            lo = mid
        else:
            hi = mid - 1
    batch = candidates[lo]
    result["batch_size"] = batch
    result["max_memory_allocated"] = peak_at(batch)

    # Timed run from a fresh allocator: `images` training images at that batch, data on the
    # host (one batch copied per step, as nf streams its batches). The first 3 steps are the
    # warm-up (cuBLAS/cuDNN choose and load their kernels); they count as training, as nf's
    # first steps do, and the rate without them is recorded too. Then an evaluation pass over
    # `eval_images` (nf's end-to-end time evaluates its validation and test splits).
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, opt = make()
    data = torch.randn(max(batch, min(images, 4096)), 3, 32, 32).pin_memory()
    labels = torch.randint(0, 10, (data.shape[0],))
    steps = max(4, images // batch)

    def batch_at(i):
        s = (i * batch) % max(1, data.shape[0] - batch + 1)
        return (data[s:s + batch].to(dev, non_blocking=True), labels[s:s + batch].to(dev, non_blocking=True))

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(3):
        step(model, opt, *batch_at(i))
    torch.cuda.synchronize()
    t_warm = time.perf_counter()
    note_driver()
    for i in range(3, steps):
        step(model, opt, *batch_at(i))
    torch.cuda.synchronize()
    t_train = time.perf_counter()
    note_driver()
    model.eval()
    with torch.no_grad():
        for i in range((eval_images + batch - 1) // batch):
            model(batch_at(i)[0])
    torch.cuda.synchronize()
    t_end = time.perf_counter()
    note_driver()
    result.update({
        "images_trained": steps * batch,
        "train_seconds": t_train - t0,
        "warmup_seconds": t_warm - t0,
        # Training images over the training time, warm-up included (as nf's figure).
        "train_images_per_sec": steps * batch / (t_train - t0),
        # The same without the 3 warm-up steps (steady state).
        "steady_images_per_sec": (steps - 3) * batch / (t_train - t_warm),
        # Training images over training and evaluation time (as nf's end-to-end figure).
        "e2e_images_per_sec": steps * batch / (t_end - t0),
        "max_memory_allocated_timed": torch.cuda.max_memory_allocated(),
        "max_memory_reserved_timed": torch.cuda.max_memory_reserved(),
        # Device memory in use beyond the CUDA context (cuBLAS/cuDNN handles and workspaces,
        # loaded kernels, the caching allocator's segments): the driver's view, as nf's
        # device_peak_bytes.
        "driver_peak_bytes": driver_peak[0],
        "libraries": mapped_libraries(),
    })
    json.dump(result, open(out, "w"), indent=1)
    print(f"torch bp, budget {budget // MiB} MiB: batch {batch}, {result['train_images_per_sec']:.0f} images/s "
          f"({result['steady_images_per_sec']:.0f} after warm-up), max_memory_allocated "
          f"{result['max_memory_allocated'] / MiB:.1f} MiB")


# --- collect -----------------------------------------------------------------------------------

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
        "evidence": [m for m in re.findall(r"^(?:GPU|NVRTC|preflight)[^\n]*", text, re.M)][:20],
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
        "driver_bytes": rep.get("device_peak_bytes"),
        "libraries": rep.get("device_libraries"),
    }


def fmt_mib(v):
    return "-" if v is None else f"{v / MiB:.1f}"


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
        "bundle": records.pop("bundle", {}),
        "preflight": test_summary(read_text(os.path.join(logs, "preflight.txt"))),
        "tests": records.pop("tests", {}),
        "runs": {},
    }
    for part in ("nvrtc-tests", "gpu-tests", "gpu-tests-sync-each"):
        text = read_text(os.path.join(logs, part + ".txt"))
        if text:
            results["tests"][part] = test_summary(text)
    for name, d in records.items():
        if d.get("kind") == "nf":
            rep = load(os.path.join(d.get("dir", ""), "report.json"))
            if rep is not None:
                d["report"] = rep
            d["summary"] = nf_summary(d)
        results["runs"][name] = d
    return results


def table(results):
    """The table's lines and the checks (name, passed)."""
    lines, checks = [], []
    runs = results["runs"]
    pre = results["preflight"]["evidence"]
    lines.append("NeuroFlux on the GPU: VGG-11, synthetic 3x32x32, one epoch per block, FP32")
    if pre:
        lines.append(pre[0])
    else:
        why = unique(results["preflight"]["panics"])
        lines.append("preflight: FAILED: " + (why[0].split("\n")[-1][:250] if why else "see logs.tgz: preflight.txt"))
    lines.append(f"nf and the tests ran with LD_LIBRARY_PATH={results['environment'].get('nf_library_path', '')}")
    tests = results["tests"]
    for part, rc_key in (("nvrtc-tests", "nvrtc_rc"), ("gpu-tests", "gpu_rc")):
        s = tests.get(part, {"results": [], "failed": [], "skipped": []})
        rc = tests.get(rc_key)
        skipped = s["skipped"]
        ok = rc == 0 and not skipped and bool(s["results"]) and not s["failed"]
        verdict = "passed" if ok else ("SKIPPED" if skipped else f"FAILED (exit {rc})")
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
    lines.append("")
    lines.append(f"{'budget':>7} {'system':<13} {'batch(es)':<20} {'train img/s':>11} {'e2e img/s':>9} "
                 f"{'plan MiB':>8} {'alloc MiB':>9} {'driver MiB':>10} {'smi MiB':>8}  note")
    budgets = sorted({d.get("budget_bytes") for d in runs.values() if d.get("budget_bytes")})
    ratios = []
    for b in budgets:
        bm = b // MiB
        nf = {}
        for mode in ("neuroflux", "bp"):
            d = runs.get(f"nf-{mode}-{bm}MiB")
            if d is None:
                continue
            s = d.get("summary")
            nf[mode] = s
            if s is None:
                lines.append(f"{bm:>5}Mi {'nf ' + mode:<13} {'-':<20} {'-':>11} {'-':>9} {'-':>8} {'-':>9} {'-':>10} "
                             f"{'-':>8}  {d.get('status')}: {d.get('message', '')[:70]}")
                checks.append((f"nf {mode} {bm} MiB produced a result", False))
                continue
            alloc, plan = s["allocation_bytes"], s["plan_bytes"]
            mem_ok = alloc is not None and plan is not None and alloc <= plan <= b
            checks.append((f"nf {mode} {bm} MiB: allocation {fmt_mib(alloc)} <= plan {fmt_mib(plan)} <= budget {bm} MiB", mem_ok))
            lines.append(f"{bm:>5}Mi {'nf ' + mode:<13} {','.join(map(str, s['batches'])):<20} "
                         f"{fmt_rate(s['train_images_per_sec']):>11} {fmt_rate(s['e2e_images_per_sec']):>9} "
                         f"{fmt_mib(plan):>8} {fmt_mib(alloc):>9} {fmt_mib(s['driver_bytes']):>10} "
                         f"{fmt_mib(d.get('smi_peak_bytes')):>8}  {'alloc <= plan <= budget' if mem_ok else 'ALLOCATION OVER PLAN OR BUDGET'}")
        t = runs.get(f"torch-bp-{bm}MiB")
        if t is not None:
            if t.get("train_images_per_sec"):
                talloc = t.get("max_memory_allocated_timed")
                checks.append((f"PyTorch BP {bm} MiB: max_memory_allocated {fmt_mib(talloc)} <= budget {bm} MiB",
                               talloc is not None and talloc <= b))
                lines.append(f"{bm:>5}Mi {'pytorch bp':<13} {str(t['batch_size']):<20} "
                             f"{fmt_rate(t['train_images_per_sec']):>11} {fmt_rate(t['e2e_images_per_sec']):>9} "
                             f"{'-':>8} {fmt_mib(t.get('max_memory_allocated_timed')):>9} "
                             f"{fmt_mib(t.get('driver_peak_bytes')):>10} {fmt_mib(t.get('smi_peak_bytes')):>8}  "
                             f"{fmt_rate(t.get('steady_images_per_sec'))} img/s without its 3 warm-up steps")
            else:
                lines.append(f"{bm:>5}Mi {'pytorch bp':<13} {'-':<20} {'-':>11} {'-':>9} {'-':>8} {'-':>9} {'-':>10} "
                             f"{'-':>8}  {str(t.get('error', 'failed'))[:80]}")
                checks.append((f"PyTorch BP {bm} MiB produced a result", False))
        nfx = nf.get("neuroflux")
        if nfx and nfx["train_images_per_sec"] and t is not None and t.get("train_images_per_sec"):
            tr = nfx["train_images_per_sec"] / t["train_images_per_sec"]
            e2e = (nfx["e2e_images_per_sec"] or 0) / t["e2e_images_per_sec"]
            steady = nfx["train_images_per_sec"] / t["steady_images_per_sec"]
            ratios.append(f"{bm} MiB: NeuroFlux / PyTorch BP: training only {tr:.2f}x, end to end {e2e:.2f}x "
                          f"(PyTorch without warm-up: {steady:.2f}x; paper: 2.3x to 6.1x)")
            if bm == 256:
                checks.append((f"speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, training only ({tr:.2f}x)", tr >= 2.3))
                checks.append((f"speed: NeuroFlux >= 2.3x PyTorch BP under 256 MiB, end to end ({e2e:.2f}x)", e2e >= 2.3))
        elif bm == 256:
            checks.append(("speed: NeuroFlux vs PyTorch BP under 256 MiB measured", False))
        nbp = nf.get("bp")
        if nfx and nbp and nfx["train_images_per_sec"] and nbp["train_images_per_sec"]:
            ratios.append(f"{bm} MiB: NeuroFlux / nf BP: training only "
                          f"{nfx['train_images_per_sec'] / nbp['train_images_per_sec']:.2f}x, end to end "
                          f"{(nfx['e2e_images_per_sec'] or 0) / (nbp['e2e_images_per_sec'] or 1):.2f}x")
        if nbp and nbp["train_images_per_sec"] and t is not None and t.get("train_images_per_sec"):
            ratios.append(f"{bm} MiB: nf BP / PyTorch BP: training only "
                          f"{nbp['train_images_per_sec'] / t['train_images_per_sec']:.2f}x (kernel efficiency)")
    lines.append("")
    lines.append("Ratios (images/s; warm-up included on both sides):")
    lines += ["  " + r for r in ratios] or ["  (no complete pair of runs)"]
    lines.append("")
    lines.append("train img/s: training images of one epoch over the training time (first steps included);")
    lines.append("e2e img/s: over the whole time of the blocks (nf: training, evaluation, activation cache;")
    lines.append("PyTorch: training and one evaluation pass over as many images as nf evaluates).")
    lines.append("plan: arena + the backend's reserve (nf memory.budget_used_bytes); alloc: nf's one device")
    lines.append("allocation, PyTorch's max_memory_allocated; driver: device memory in use beyond the CUDA")
    lines.append("context (kernels, cuBLAS/cuDNN, allocations); smi: nvidia-smi peak of the run, context included.")
    bundle = results.get("bundle", {})
    checks.append((f"logs.tgz written, under {MAX_BUNDLE // MiB} MiB ({fmt_mib(bundle.get('logs_bytes'))} MiB)",
                   bundle.get("logs_rc") == 0 and (bundle.get("logs_bytes") or MAX_BUNDLE + 1) <= MAX_BUNDLE))
    lines.append("")
    lines.append("Checks:")
    lines += [f"  {'PASS' if ok else 'FAIL'} {name}" for name, ok in checks]
    return lines, checks


def cmd_collect(work, out):
    results = build_results(work)
    lines, checks = table(results)
    results["checks"] = [{"check": n, "passed": ok} for n, ok in checks]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "table.txt"), "w") as f:
        f.write(text)
    sys.stdout.write("\n" + text)
    return 0 if checks and all(ok for _, ok in checks) else 1


def cmd_bundle_logs(src, archive):
    """Every regular file under `src`, each cut to its last LOG_TAIL bytes (then smaller, if
    the archive would exceed MAX_BUNDLE)."""
    files = []
    for root, _, names in os.walk(src):
        for n in sorted(names):
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    tail = LOG_TAIL
    while True:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for p in files:
                with open(p, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    f.seek(max(0, size - tail))
                    data = f.read()
                info = tarfile.TarInfo(os.path.relpath(p, src))
                info.size = len(data)
                info.mtime = int(os.path.getmtime(p))
                tar.addfile(info, io.BytesIO(data))
        if buf.tell() <= MAX_BUNDLE or tail <= 4096:
            break
        tail //= 4
    with open(archive, "wb") as f:
        f.write(buf.getvalue())
    return 0 if buf.tell() <= MAX_BUNDLE else 1


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    cmd = args[0]
    if cmd == "bundle" and len(args) == 3:
        cmd_bundle(args[1], args[2])
    elif cmd in ("record", "record-add") and len(args) >= 2:
        cmd_record(args[1], args[2:], add=cmd == "record-add")
    elif cmd == "torch":
        opts = dict(zip(args[1::2], args[2::2]))
        cmd_torch(int(opts["--budget"]), int(opts["--images"]), int(opts.get("--eval-images", 0)), opts["--out"])
    elif cmd == "collect" and len(args) == 3:
        sys.exit(cmd_collect(args[1], args[2]))
    elif cmd == "bundle-logs" and len(args) == 3:
        sys.exit(cmd_bundle_logs(args[1], args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
