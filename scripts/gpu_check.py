#!/usr/bin/env python3
"""Helper of scripts/gpu-check.sh (standard library only, plus PyTorch for `torch`).

  gpu_check.py bundle CARGO_JSON DEST      copy the nf-cuda test executables named in cargo's
                                           --message-format=json output into DEST
  gpu_check.py torch --budget BYTES --images N --out FILE
                                           PyTorch backpropagation baseline: the same VGG-11
                                           (conv3x3 without bias, BN, ReLU, 2x2 max-pool;
                                           global average pool + linear), the largest batch
                                           whose torch.cuda.max_memory_allocated() fits the
                                           budget, images/s over N training images
  gpu_check.py table OUTDIR                one table from OUTDIR/*.json
"""
import json
import os
import shutil
import sys
import time

MiB = 1 << 20


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


def cmd_torch(budget, images, out):
    import torch
    import torch.nn as nn

    # Full FP32, like the nf CUDA backend's default (no TF32 in cuDNN or cuBLAS).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    dev = torch.device("cuda")
    result = {"kind": "torch", "mode": "bp", "budget_bytes": budget, "images": images,
              "torch": torch.__version__, "device": torch.cuda.get_device_name(0)}

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

    # Timed run: `images` training images at that batch, data on the host (one batch copied
    # per step, as nf streams its batches), after three warm-up steps.
    torch.cuda.reset_peak_memory_stats()
    model, opt = make()
    data = torch.randn(max(batch, min(images, 4096)), 3, 32, 32).pin_memory()
    labels = torch.randint(0, 10, (data.shape[0],))
    steps = max(1, images // batch)

    def batch_at(i):
        s = (i * batch) % max(1, data.shape[0] - batch + 1)
        return (data[s:s + batch].to(dev, non_blocking=True), labels[s:s + batch].to(dev, non_blocking=True))

    for i in range(3):
        step(model, opt, *batch_at(i))
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(model, opt, *batch_at(i))
    torch.cuda.synchronize()
    secs = time.perf_counter() - t
    result.update({
        "images_trained": steps * batch,
        "seconds": secs,
        "images_per_sec": steps * batch / secs,
        "max_memory_allocated_timed": torch.cuda.max_memory_allocated(),
        "max_memory_reserved_timed": torch.cuda.max_memory_reserved(),
    })
    json.dump(result, open(out, "w"), indent=1)
    print(f"torch bp, budget {budget // MiB} MiB: batch {batch}, "
          f"{result['images_per_sec']:.0f} images/s, max_memory_allocated {result['max_memory_allocated'] / MiB:.1f} MiB")


def nf_summary(run):
    """Images/s of an nf run: the training images of all blocks over their training time."""
    rep_path = os.path.join(run["dir"], "report.json")
    if run.get("status") != "ok" or not os.path.exists(rep_path):
        return None
    rep = json.load(open(rep_path))
    blocks = rep.get("blocks", [])
    train_s = sum(b.get("train_seconds", 0.0) for b in blocks)
    all_s = sum(b.get("seconds", 0.0) for b in blocks)
    images = sum(b.get("images_per_sec", 0.0) * b.get("train_seconds", 0.0) for b in blocks)
    n_train = rep.get("samples", {}).get("train", 0) * rep.get("epochs_per_block", 1)
    return {
        "batches": [b.get("batch_size") for b in blocks],
        # Time to train every unit once over the training set (the BP figure is the same).
        "images_per_sec": n_train / train_s if train_s > 0 else None,
        # The same with each block's whole time: training, its evaluation and building the
        # activation cache for the next block.
        "e2e_images_per_sec": n_train / all_s if all_s > 0 else None,
        "block_images_per_sec": [round(b.get("images_per_sec", 0.0)) for b in blocks],
        "images_trained": images,
        "seconds_total": rep.get("seconds_total"),
        "plan_bytes": rep.get("peak_arena_bytes"),
        "device_peak_bytes": rep.get("device_peak_bytes"),
    }


def fmt_mib(v):
    return "-" if v is None else f"{v / MiB:8.1f}"


def cmd_table(outdir):
    runs = {}
    for name in sorted(os.listdir(outdir)):
        if name.endswith(".json") and (name.startswith("nf-") or name.startswith("torch-")):
            d = json.load(open(os.path.join(outdir, name)))
            runs[name[:-5]] = d
    budgets = sorted({d["budget_bytes"] for d in runs.values()})
    print()
    print("NeuroFlux on the GPU: VGG-11, synthetic 3x32x32, one epoch per block, FP32")
    print(f"{'budget':>8} {'system':<14} {'batch(es)':<22} {'images/s':>9} {'e2e img/s':>9} {'plan MiB':>9} "
          f"{'device MiB':>10} {'smi MiB':>8} {'note'}")
    summary = []
    for b in budgets:
        nf = {}
        for mode in ("neuroflux", "bp"):
            d = runs.get(f"nf-{mode}-{b // MiB}MiB")
            if d is None:
                continue
            s = nf_summary(d)
            nf[mode] = s
            if s is None:
                print(f"{b // MiB:>6}Mi {'nf ' + mode:<14} {'-':<22} {'-':>9} {'-':>9} {'-':>9} {'-':>10} {'-':>8} "
                      f"{d.get('status')}: {d.get('message', '')[:70]}")
                continue
            ips = s["images_per_sec"]
            note = "" if s["device_peak_bytes"] is not None else "(no device_peak_bytes in report)"
            if s["device_peak_bytes"] is not None and s["plan_bytes"]:
                note = "peak <= budget" if s["device_peak_bytes"] <= b else "PEAK > BUDGET"
            print(f"{b // MiB:>6}Mi {'nf ' + mode:<14} {','.join(map(str, s['batches'])):<22} "
                  f"{ips:>9.0f} {s['e2e_images_per_sec'] or 0:>9.0f} {fmt_mib(s['plan_bytes']):>9} {fmt_mib(s['device_peak_bytes']):>10} "
                  f"{fmt_mib(d.get('smi_peak_bytes')):>8} {note}")
        t = runs.get(f"torch-bp-{b // MiB}MiB")
        if t is not None:
            if "images_per_sec" in t:
                print(f"{b // MiB:>6}Mi {'pytorch bp':<14} {str(t['batch_size']):<22} {t['images_per_sec']:>9.0f} "
                      f"{'-':>9} {'-':>9} {fmt_mib(t['max_memory_allocated']):>10} {'-':>8} max_memory_allocated")
            else:
                print(f"{b // MiB:>6}Mi {'pytorch bp':<14} {'-':<22} {'-':>9} {'-':>9} {'-':>9} {'-':>10} {'-':>8} "
                      f"{t.get('error', 'failed')}")
        nfx = nf.get("neuroflux")
        if nfx and nfx["images_per_sec"]:
            if t is not None and t.get("images_per_sec"):
                summary.append(f"{b // MiB} MiB: NeuroFlux / PyTorch BP = {nfx['images_per_sec'] / t['images_per_sec']:.2f}x"
                               " (paper: 2.3x to 6.1x)")
            if nf.get("bp") and nf["bp"]["images_per_sec"]:
                summary.append(f"{b // MiB} MiB: NeuroFlux / nf BP = {nfx['images_per_sec'] / nf['bp']['images_per_sec']:.2f}x")
            if t is not None and t.get("images_per_sec") and nf.get("bp") and nf["bp"]["images_per_sec"]:
                summary.append(f"{b // MiB} MiB: nf BP / PyTorch BP = {nf['bp']['images_per_sec'] / t['images_per_sec']:.2f}x"
                               " (kernel efficiency at the same batch rule)")
    print()
    print("Ratios (images/s):")
    for line in summary or ["(no complete pair of runs)"]:
        print("  " + line)
    print()
    print("images/s: training images of one epoch over the training time of all blocks; e2e img/s: over")
    print("the blocks' whole time (training, evaluating the heads, building the activation cache).")
    print("plan MiB: the planned arena (nf report peak_arena_bytes); device MiB: what the driver saw the")
    print("backend take (report device_peak_bytes) or torch.cuda.max_memory_allocated; smi MiB: nvidia-smi")
    print("peak of the process, CUDA context included.")


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    if args[0] == "bundle" and len(args) == 3:
        cmd_bundle(args[1], args[2])
    elif args[0] == "torch":
        opts = dict(zip(args[1::2], args[2::2]))
        cmd_torch(int(opts["--budget"]), int(opts["--images"]), opts["--out"])
    elif args[0] == "table" and len(args) == 2:
        cmd_table(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
