#!/usr/bin/env bash
# Before/after check of a change that must not move a number: two `nf` binaries (e.g. release
# builds of the commit a change starts from and of its end) train the same run, interleaved
# round after round, and each run prints its seconds (whole run and training epochs only) and a
# hash of the tensors of model.safetensors and exit.safetensors (names, shapes and bytes; the
# metadata, which records versions and paths, left out). Equal hashes: the same model bit for bit.
#
#   bash benches/compare_builds.sh OLD_NF NEW_NF OUT_DIR ROUNDS [nf train flags...]
#   e.g. bash benches/compare_builds.sh /tmp/nf-old target/release/nf /tmp/cmp 4 \
#            --data /usr/share/datasets/fashion-mnist --limit 20000 --epochs 1 --threads 2 \
#            --batch-max 512 --seed 1
#
# Give both binaries flags they both know; an explicit --batch-max keeps newer plan options (the
# --min-steps cap) out of the comparison. At the end: per round the ratio new/old of training
# seconds, and their median.
set -euo pipefail
if (($# < 4)); then
    echo "usage: bash benches/compare_builds.sh OLD_NF NEW_NF OUT_DIR ROUNDS [nf train flags...]" >&2
    exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
out=$(mkdir -p "$3" && realpath "$3")
rounds=$4
shift 4
results=$out/results.tsv
printf 'round\tbuild\tseconds_total\ttrain_seconds\ttest_acc\tmodel\texit\n' >"$results"
for ((r = 1; r <= rounds; r++)); do
    for build in old new; do
        bin=$old
        [[ $build == new ]] && bin=$new
        run=$out/$build-$r
        rm -rf "$run"
        "$bin" train "$@" --out "$run" >"$run.log" 2>&1
        python3 - "$r" "$build" "$run" >>"$results" <<'EOF'
import hashlib, json, struct, sys
r, build, run = sys.argv[1:4]
rep = json.load(open(run + "/report.json"))

def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    header.pop("__metadata__", None)
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode() + b[8 + n:]).hexdigest()[:12]

train = sum(b["train_seconds"] for b in rep["blocks"])
print("\t".join([r, build, "%.2f" % rep["seconds_total"], "%.2f" % train, "%.4f" % rep["test_acc"],
                 tensors(run + "/model.safetensors"), tensors(run + "/exit.safetensors")]))
EOF
        tail -1 "$results"
    done
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
by = {(r[0], r[1]): r for r in rows}
ratios = [float(by[(k, "new")][3]) / float(by[(k, "old")][3])
          for k in sorted({r[0] for r in rows}, key=int) if (k, "old") in by and (k, "new") in by]
same = all(by[(k, "new")][5:7] == by[(k, "old")][5:7] for k, _ in by if (k, "new") in by and (k, "old") in by)
print("training seconds new/old per round:", ", ".join("%.3f" % x for x in ratios))
print("median: %.3f" % statistics.median(ratios))
print("model and exit tensors identical in every round:", same)
EOF
