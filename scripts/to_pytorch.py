#!/usr/bin/env python3
"""Build the PyTorch module of an nf model file from its metadata and load its tensors.

    to_pytorch.py MODEL.safetensors [--check DATA_DIR] [--predictions CSV]

As a library:

    from to_pytorch import load
    model = load("runs/x/exit.safetensors")   # an nn.Module in eval mode, weights loaded
    logits = model(images)                     # images: float [N, C, H, W] in [0, 1]

The architecture comes from the file's metadata: `architecture` (JSON: name, head_pool and the
units' ops, written by `nf train`), or for older files the zoo model named by `model`. The module
holds what the file holds, under the same names, and is loaded with
`load_state_dict(strict=True)`:

- `units`: an `nn.ModuleList` of one `nn.Sequential` per unit (units 0..=exit);
- `heads`: an `nn.ModuleDict` keyed by unit number, for each auxiliary head in the file
  (model.safetensors keeps every head, exit.safetensors only the exit unit's);
- `classifier`: `nn.Sequential(AdaptiveAvgPool2d(1), Flatten, Linear)` when the file ends at the
  last unit.

Batch norm modules have no `num_batches_tracked` (nf files do not store it). The forward pass
takes the image as stored, pixels / 255 in [0, 1], pads it with zeros by `pad` and normalises it
with the file's `(x - mean) / std` (as `nf eval` and the ONNX export do), then runs units
0..=exit and the exit unit's head, or the classifier. `forward_normalised` skips the first step.

--check DATA_DIR prints the accuracy on DATA_DIR's IDX test set (t10k-images-idx3-ubyte[.gz],
t10k-labels-idx1-ubyte[.gz]); --predictions CSV (from `nf eval --predictions`) also compares the
logits and predicted classes with nf's for this file's name.

Needs torch (and numpy); not used by the CI tests.
"""
import argparse
import csv
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# The zoo, for files written before the `architecture` key (units as op lists).
def _C(out):
    """A VGG unit: conv3x3 (pad 1, no bias), BN, ReLU."""
    return [{"op": "conv", "out": out, "k": 3, "stride": 1, "pad": 1, "bias": False}, {"op": "batchnorm"}, {"op": "relu"}]


def _CP(out):
    """A VGG unit that ends a stage: conv3x3, BN, ReLU, 2x2 max-pool."""
    return _C(out) + [{"op": "maxpool2"}]


def _B(out, s=1):
    """A ResNet unit: one basic block."""
    return [{"op": "basicblock", "out": out, "stride": s}]


ZOO = {
    "vgg-small": [_CP(32), _CP(64), _C(128), _CP(128)],
    "vgg11": [_CP(64), _CP(128), _C(256), _CP(256), _C(512), _CP(512), _C(512), _CP(512)],
    "vgg16": [_C(64), _CP(64), _C(128), _CP(128), _C(256), _C(256), _CP(256), _C(512), _C(512),
              _CP(512), _C(512), _C(512), _CP(512)],
    "vgg19": [_C(64), _CP(64), _C(128), _CP(128), _C(256), _C(256), _C(256), _CP(256), _C(512),
              _C(512), _C(512), _CP(512), _C(512), _C(512), _C(512), _CP(512)],
    "resnet18": [_C(64), _B(64), _B(64), _B(128, 2), _B(128), _B(256, 2), _B(256), _B(512, 2),
                 _B(512)],
}

BN_EPS = 1e-5


def _as4d(x):
    """A matrix [N, L] (after Flatten or Linear) as [N, L, 1, 1], as nf sees it."""
    return x[:, :, None, None] if x.dim() == 2 else x


class Conv2d(nn.Conv2d):
    def forward(self, x):
        return super().forward(_as4d(x))


class MaxPool2(nn.MaxPool2d):
    """nf's MaxPool2: 2x2, stride 2, odd sizes floored."""

    def __init__(self):
        super().__init__(2, 2)

    def forward(self, x):
        return super().forward(_as4d(x))


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """nf's AvgPool(s): PyTorch's adaptive bins."""

    def forward(self, x):
        return super().forward(_as4d(x))


class Linear(nn.Linear):
    """nf's Linear reads its input flattened."""

    def forward(self, x):
        return super().forward(x.flatten(1))


class BatchNorm(nn.BatchNorm2d):
    """nn.BatchNorm2d (eps 1e-5, on [N, C, H, W] or [N, C]) without `num_batches_tracked`."""

    def __init__(self, c):
        super().__init__(c, eps=BN_EPS)
        self.num_batches_tracked = None

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")

    def _load_from_state_dict(self, state_dict, prefix, *args):
        # Skip _NormBase's filling in of num_batches_tracked for old state dicts.
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut
    (identity, or conv1x1(stride) -> BN when the shape changes), then ReLU."""

    def __init__(self, c, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c, out, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm(out)
        if stride != 1 or out != c:
            self.shortcut = nn.Sequential(nn.Conv2d(c, out, 1, stride, 0, bias=False), BatchNorm(out))
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        x = _as4d(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


def _layers(ops, shape):
    """The modules of `ops` on input shape (c, h, w), and the output shape."""
    c, h, w = shape
    mods = []
    for op in ops:
        kind = op["op"]
        if kind == "conv":
            k, s, p = op["k"], op["stride"], op["pad"]
            mods.append(Conv2d(c, op["out"], k, s, p, bias=op["bias"]))
            c, h, w = op["out"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif kind == "batchnorm":
            mods.append(BatchNorm(c))
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "maxpool2":
            mods.append(MaxPool2())
            h, w = h // 2, w // 2
        elif kind == "avgpool":
            mods.append(AdaptiveAvgPool2d(op["size"]))
            h = w = op["size"]
        elif kind == "flatten":
            mods.append(nn.Flatten())
            c, h, w = c * h * w, 1, 1
        elif kind == "linear":
            mods.append(Linear(c * h * w, op["out"]))
            c, h, w = op["out"], 1, 1
        elif kind == "basicblock":
            s = op["stride"]
            mods.append(BasicBlock(c, op["out"], s))
            c, h, w = op["out"], (h - 1) // s + 1, (w - 1) // s + 1
        else:
            raise ValueError(f"unknown op {kind!r}")
    return mods, (c, h, w)


def _head_ops(f, classes, shape, head_pool):
    """nf's auxiliary head of width f on a unit output of `shape` (ModelSpec::head)."""
    ops = []
    if head_pool > 0 and (shape[1] > head_pool or shape[2] > head_pool):
        ops.append({"op": "avgpool", "size": head_pool})
    ops += [
        {"op": "conv", "out": f, "k": 3, "stride": 1, "pad": 1, "bias": False},
        {"op": "batchnorm"},
        {"op": "relu"},
        {"op": "avgpool", "size": 2},
        {"op": "flatten"},
        {"op": "linear", "out": classes},
    ]
    return ops


class NfModel(nn.Module):
    """An nf model: `units` (0..=exit), `heads` in the file, `classifier` when it ends at the last
    unit. `forward` takes images in [0, 1] as stored; see the module's doc."""

    def __init__(self, meta, names):
        super().__init__()
        arch = json.loads(meta["architecture"]) if "architecture" in meta else None
        if arch is None:
            if meta.get("model") not in ZOO:
                raise ValueError(f"no `architecture` metadata and no zoo model {meta.get('model')!r}")
            arch = {"name": meta["model"], "head_pool": int(meta.get("head_pool", 0)), "units": ZOO[meta["model"]]}
        self.name = arch["name"]
        units = arch["units"]
        head_pool = int(arch.get("head_pool", 0))
        c, h, w = (int(v) for v in meta["input"].lower().split("x"))
        self.classes = int(meta["classes"])
        self.exit = int(meta["exit"])
        self.pad = int(meta.get("pad", 0))
        widths = json.loads(meta["heads"])
        self.register_buffer("mean", torch.tensor(json.loads(meta["mean"])).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(json.loads(meta["std"])).view(1, -1, 1, 1), persistent=False)

        shape = (c, h, w)
        self.units = nn.ModuleList()
        self.heads = nn.ModuleDict()
        for u in range(self.exit + 1):
            mods, shape = _layers(units[u], shape)
            self.units.append(nn.Sequential(*mods))
            if any(n.startswith(f"heads.{u}.") for n in names):
                if widths[u] <= 0:
                    raise ValueError(f"the file has head {u} but its width is {widths[u]}")
                head, _ = _layers(_head_ops(widths[u], self.classes, shape, head_pool), shape)
                self.heads[str(u)] = nn.Sequential(*head)
        self.ends_with_classifier = self.exit + 1 == len(units)
        if self.ends_with_classifier:
            cls, _ = _layers([{"op": "avgpool", "size": 1}, {"op": "flatten"}, {"op": "linear", "out": self.classes}], shape)
            self.classifier = nn.Sequential(*cls)
        elif str(self.exit) not in self.heads:
            raise ValueError(f"the file ends at unit {self.exit} but has no head for it")

    def normalise(self, x):
        """Images as stored, [N, C, H, W] in [0, 1]: padded with zeros by `pad`, normalised."""
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        return (x - self.mean) / self.std

    def forward_normalised(self, x):
        for unit in self.units:
            x = unit(x)
        end = self.classifier if self.ends_with_classifier else self.heads[str(self.exit)]
        return end(x)

    def forward(self, x):
        return self.forward_normalised(self.normalise(x))


def read_safetensors(path):
    """The metadata and the tensors (float32) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {t['dtype']}, not F32")
        a, b = t["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return meta, tensors


def load(path):
    """The module of the nf model file `path`, its tensors loaded (strict), in eval mode."""
    meta, tensors = read_safetensors(path)
    model = NfModel(meta, tensors.keys())
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def read_idx(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            with (gzip.open if p.endswith(".gz") else open)(p, "rb") as f:
                data = f.read()
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    sys.exit(f"error: {path}[.gz] not found")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model.safetensors or exit.safetensors written by nf train")
    ap.add_argument("--check", metavar="DATA_DIR", help="accuracy on this IDX test set")
    ap.add_argument("--predictions", metavar="CSV", help="compare with nf eval --predictions")
    args = ap.parse_args()
    model = load(args.model)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {model.name}, units 0..={model.exit}, "
          f"{'classifier' if model.ends_with_classifier else f'head of unit {model.exit}'}; "
          f"{params} parameters in the file; loaded with strict=True")
    if not args.check:
        return 0
    images = read_idx(os.path.join(args.check, "t10k-images-idx3-ubyte"))
    labels = read_idx(os.path.join(args.check, "t10k-labels-idx1-ubyte")).astype(np.int64)
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0))
    if x.dim() == 3:
        x = x[:, None]
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()
    pred = logits.argmax(1)
    result = {"accuracy": float((pred == labels).mean()), "images": len(x)}
    if args.predictions:
        name = os.path.basename(args.model)
        rows = [r for r in csv.DictReader(open(args.predictions, newline="")) if r["model"] == name]
        nf_pred = np.array([int(r["predicted"]) for r in rows])
        nf_logits = np.array([[float(v) for k, v in r.items() if k.startswith("logit_")] for r in rows])
        result["agreement"] = float((nf_pred == pred).mean())
        result["max_logit_diff"] = float(np.abs(nf_logits - logits).max())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
