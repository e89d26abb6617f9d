#!/usr/bin/env python3
"""PyTorch BP reference for `nf train`: the small VGG on the full Fashion-MNIST, 3 epochs.

Same model (conv 32, M, 64, M, 128, 128, M with BN and no conv bias, global average pool,
linear), same optimiser (SGD momentum 0.9, weight decay 1e-4, nf train's defaults), one-cycle learning rate, same
normalisation (training-set mean/std), batch 128, same thread count (`torch.set_num_threads` and
OMP_NUM_THREADS / MKL_NUM_THREADS set before torch loads). `--precision bf16` runs the forward
and the loss (training and test) under `torch.autocast("cpu", dtype=torch.bfloat16)`: the
convolutions and the linear layer in bf16, master weights and SGD in f32. Prints one JSON line
with the wall time (data loading excluded) and the test accuracy. Run with a torch from PyPI in a
venv outside the repository, e.g.

    /tmp/torchvenv/bin/python benches/pytorch_fmnist.py --threads 2 --epochs 3 --precision bf16
"""
import argparse, gzip, json, os, struct, time
import numpy as np


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 0x803:
        h, w = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, h, w)
    return np.frombuffer(data, np.uint8, offset=8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--val", type=float, default=0.1, help="held out like nf train --val (not trained on)")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="first N of each split before the split, like nf train --limit")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32", help="bf16: torch.autocast on the CPU")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch, torch.nn as nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr = idx(f"{args.data}/train-images-idx3-ubyte.gz").astype(np.float32) / 255
    ytr = idx(f"{args.data}/train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = idx(f"{args.data}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255
    yte = idx(f"{args.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if args.limit:
        xtr, ytr, xte, yte = xtr[:args.limit], ytr[:args.limit], xte[:args.limit], yte[:args.limit]
    keep = np.random.default_rng(0).permutation(len(xtr))[: int(round(len(xtr) * (1 - args.val)))]
    xtr, ytr = xtr[keep], ytr[keep]
    mean, std = xtr.mean(), xtr.std()
    xtr, xte = torch.from_numpy((xtr - mean) / std), torch.from_numpy((xte - mean) / std)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)

    def unit(cin, cout, pool):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    model = nn.Sequential(*unit(1, 32, True), *unit(32, 64, True), *unit(64, 128, False),
                          *unit(128, 128, True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    steps = args.epochs * ((len(xtr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), args.batch):
            j = perm[i:i + args.batch]
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(xtr[j]), ytr[j])
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad(), autocast():
        correct = sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
    print(json.dumps({"system": "pytorch", "torch": torch.__version__, "threads": args.threads, "batch": args.batch,
                      "precision": args.precision, "train_samples": len(xtr),
                      "epochs": args.epochs, "train_seconds": round(train_s, 1), "seconds_total": round(time.perf_counter() - t0, 1),
                      "cpu_seconds": round(time.process_time() - c0, 1),
                      "test_acc": correct / len(xte)}))


if __name__ == "__main__":
    main()
