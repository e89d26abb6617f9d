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
  gpu_check.py results WORK OUT [--quiet]  the three result files: WORK/logs -> OUT/logs.tgz
                                           (each log cut to its last 2 MiB, the archive to at
                                           most 15 MiB), then WORK/records/*.json (+ the
                                           nf reports and the test logs) -> OUT/results.json
                                           and OUT/table.txt (gpu_check_table.py); prints the
                                           table unless --quiet; exit status 1 when a check
                                           failed
  gpu_check.py cuda-libs DEST RECORD DIR...
                                           link the first CUDA 13 NVRTC and cuBLAS files found
                                           in the DIRs (no `stubs` folder) into DEST, also
                                           under the unversioned names; what was chosen and
                                           what is missing to RECORD
  gpu_check.py smi-peak FILE               peak of nvidia-smi's used MiB in FILE over the first
                                           number in FILE.before, in bytes; `null` when either
                                           has none ([N/A], [Insufficient Permissions])
  gpu_check.py glibc-check MAX RECORD BIN...
                                           `objdump -T` of each BIN: exit 1 when one needs a
                                           GLIBC_ symbol version newer than MAX; the newest
                                           version needed to RECORD
  gpu_check.py glibc-runs HAVE NEED        `yes: ...`, `no: ...` (HAVE older than NEED) or
                                           `unknown: ...`
"""
import io
import json
import os
import re
import shutil
import sys
import tarfile
import time

from gpu_check_table import MAX_BUNDLE, MiB, collect

# Each log is cut to its last LOG_TAIL bytes in logs.tgz.
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


# --- the library folder, nvidia-smi, glibc -----------------------------------------------------

# The CUDA 13 files nf and the tests need, as (link names, file-name pattern): cudarc tries the
# unversioned name first, and would take CUDA 12's libnvrtc.so if one came first on the path;
# NVRTC loads its builtins by their versioned name; cuBLAS loads cublasLt by its soname.
CUDA13_FILES = [
    ("libnvrtc.so.13", ["libnvrtc.so.13", "libnvrtc.so"], r"libnvrtc\.so\.13(\.[0-9.]+)?$"),
    ("libnvrtc-builtins.so.13.*", [], r"libnvrtc-builtins\.so\.13\.[0-9.]+$"),
    ("libcublas.so.13", ["libcublas.so.13", "libcublas.so"], r"libcublas\.so\.13(\.[0-9.]+)?$"),
    ("libcublasLt.so.13", ["libcublasLt.so.13", "libcublasLt.so"], r"libcublasLt\.so\.13(\.[0-9.]+)?$"),
    # NCCL 2 (the NCCL smoke run): cudarc opens it as libnccl.so, which only NCCL's development
    # files install; the folder gives that name to the runtime's libnccl.so.2.
    ("libnccl.so.2", ["libnccl.so.2", "libnccl.so"], r"libnccl\.so\.2(\.[0-9.]+)?$"),
]


def cmd_cuda_libs(dest, record, dirs):
    """Link the CUDA 13 NVRTC and cuBLAS files found first in `dirs` (in order; folders named
    `stubs` skipped) into `dest`, under every name cudarc or the libraries look for (a file
    without names keeps its own); record what was chosen and what is missing in `record`."""
    os.makedirs(dest, exist_ok=True)
    chosen, missing, seen = {}, [], []
    for d in dirs:
        d = os.path.abspath(d) if d else ""
        if d and "stubs" not in d.split(os.sep) and os.path.isdir(d) and d not in seen and d != os.path.abspath(dest):
            seen.append(d)
    for label, names, pattern in CUDA13_FILES:
        found = None
        for d in seen:
            try:
                matches = [n for n in os.listdir(d) if re.match(pattern, n)]
            except OSError:
                continue
            if matches:
                # The shortest name is the soname link (libnvrtc.so.13 before libnvrtc.so.13.0.88).
                found = os.path.join(d, min(matches, key=lambda n: (len(n), n)))
                break
        if found is None:
            missing.append(label)
            continue
        for n in names or [os.path.basename(found)]:
            link = os.path.join(dest, n)
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.realpath(found), link)
        chosen[label] = os.path.realpath(found)
    with open(record, "w") as f:
        json.dump({"kind": "libraries", "folder": dest, "chosen": chosen, "missing": missing,
                   "searched": seen}, f, indent=1)
    for k, v in chosen.items():
        print(f"CUDA 13 library {k}: {v}")
    for k in missing:
        print(f"CUDA 13 library {k}: NOT FOUND in {len(seen)} folders (--lib-dir adds one)")


def numbers(path):
    """The integers of a file of nvidia-smi answers, one a line ("[N/A]", "[Insufficient
    Permissions]" and other non-numbers skipped)."""
    out = []
    for line in read_lines(path):
        line = line.strip()
        if re.fullmatch(r"[0-9]+", line):
            out.append(int(line))
    return out


def read_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def cmd_smi_peak(path):
    """Print the peak of nvidia-smi's used memory (MiB samples in `path`) over the use before
    the run (`path`.before), in bytes, or `null` when either has no number."""
    samples, before = numbers(path), numbers(path + ".before")
    if not samples or not before:
        print("null")
    else:
        print((max(samples) - before[0]) * MiB)


def version_key(v):
    return tuple(int(x) for x in re.findall(r"[0-9]+", v))


def glibc_needs(paths):
    """The GLIBC_x.y symbol versions each of `paths` needs (`objdump -T`), as {path: (max
    version, [symbols of that version])}."""
    import subprocess

    out = {}
    for p in paths:
        text = subprocess.run(["objdump", "-T", p], check=True, capture_output=True, text=True).stdout
        best, syms = "0", []
        for m in re.finditer(r"\(?GLIBC_([0-9.]+)\)?\s+(\S+)\s*$", text, re.M):
            v, sym = m.group(1), m.group(2)
            if version_key(v) > version_key(best):
                best, syms = v, [sym]
            elif v == best:
                syms.append(sym)
        out[p] = (best, syms)
    return out


def cmd_glibc_check(limit, record, paths):
    """Fail (exit 1) when a binary needs a glibc symbol version newer than `limit`; write the
    newest version needed to `record` (what the run mode compares with the machine's)."""
    needs = glibc_needs(paths)
    worst = "0"
    ok = True
    for p, (v, syms) in needs.items():
        verdict = "ok" if version_key(v) <= version_key(limit) else f"NEWER THAN {limit}"
        print(f"  {os.path.basename(p)}: needs GLIBC_{v} ({', '.join(sorted(set(syms))[:4])}): {verdict}")
        ok = ok and version_key(v) <= version_key(limit)
        worst = max(worst, v, key=version_key)
    with open(record, "w") as f:
        f.write(worst + "\n")
    if not ok:
        sys.exit(f"gpu_check.py glibc-check: a binary needs a glibc newer than {limit} (see above)")
    print(f"  newest glibc symbol version needed: GLIBC_{worst} (<= {limit})")


def cmd_glibc_runs(have, need):
    """Say whether a machine whose glibc is `have` runs binaries that need `need`."""
    if not re.fullmatch(r"[0-9][0-9.]*", have) or not re.fullmatch(r"[0-9][0-9.]*", need):
        print(f"unknown: cannot compare glibc '{have}' with the bundle's '{need}'; trying")
    elif version_key(have) >= version_key(need):
        print(f"yes: glibc {have} >= {need}")
    else:
        print(f"no: this machine's glibc {have} is older than the {need} the bundle needs "
              f"(nf and the tests cannot start)")


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


def cmd_results(work, out, quiet):
    """logs.tgz (through a temporary file: an interrupted write leaves the last one), its
    record, then results.json and table.txt."""
    tmp = os.path.join(out, "logs.tgz.tmp")
    rc = cmd_bundle_logs(os.path.join(work, "logs"), tmp)
    os.replace(tmp, os.path.join(out, "logs.tgz"))
    size = os.path.getsize(os.path.join(out, "logs.tgz"))
    cmd_record(os.path.join(work, "records", "bundle.json"), ["kind=bundle", f"logs_rc:={rc}", f"logs_bytes:={size}"])
    return collect(work, out, quiet)


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
    elif cmd == "results" and len(args) in (3, 4) and args[3:] in ([], ["--quiet"]):
        sys.exit(cmd_results(args[1], args[2], quiet=args[3:] == ["--quiet"]))
    elif cmd == "cuda-libs" and len(args) >= 3:
        cmd_cuda_libs(args[1], args[2], args[3:])
    elif cmd == "smi-peak" and len(args) == 2:
        cmd_smi_peak(args[1])
    elif cmd == "glibc-check" and len(args) >= 4:
        cmd_glibc_check(args[1], args[2], args[3:])
    elif cmd == "glibc-runs" and len(args) == 3:
        cmd_glibc_runs(args[1], args[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
