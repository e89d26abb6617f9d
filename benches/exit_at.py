#!/usr/bin/env python3
"""The early-exit model ending at any unit, from a run's model.safetensors.

`nf train` writes exit.safetensors at the unit its --exit-tolerance picks; model.safetensors
holds every unit and every trained head, so the exit at another unit is a subset of it:
units 0..=UNIT and head UNIT (or the classifier for the last unit), with the metadata's `exit`
and `crc32` entries to match. `nf eval` and `nf export` read the result like any model file.

    python3 benches/exit_at.py RUN/model.safetensors 2 /tmp/exit-unit2.safetensors
    nf eval --model /tmp/exit-unit2.safetensors --data DIR

Standard library only.
"""
import json, struct, sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    src, unit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(src, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    n_units = len(json.loads(meta["heads"]))
    if not 0 <= unit < n_units:
        sys.exit(f"exit_at: unit {unit} is not one of the model's {n_units} units")

    def keep(name):
        part, idx = name.split(".")[:2]
        if part == "units":
            return int(idx) <= unit
        if part == "heads":
            return int(idx) == unit
        return part == "classifier" and unit == n_units - 1

    names = [k for k in header if keep(k)]
    if unit + 1 < n_units and not any(k.startswith(f"heads.{unit}.") for k in names):
        sys.exit(f"exit_at: {src} has no trained head at unit {unit}")
    body, new = bytearray(), {}
    for k in sorted(names, key=lambda k: header[k]["data_offsets"][0]):
        a, b = header[k]["data_offsets"]
        new[k] = dict(header[k], data_offsets=[len(body), len(body) + b - a])
        body += raw[8 + n + a:8 + n + b]
    crc = json.loads(meta["crc32"])
    meta["crc32"] = json.dumps({k: crc[k] for k in names}, separators=(",", ":"))
    meta["exit"] = str(unit)
    text = json.dumps(dict(new, __metadata__=meta), separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + bytes(body))
    print(f"{out}: units 0..={unit}, {len(names)} tensors")


if __name__ == "__main__":
    main()
