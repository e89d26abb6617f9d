#!/usr/bin/env bash
# Accuracy of data-parallel training (issue 26): 2 ranks (mpirun, 1 thread each) against 1 rank
# (a plain process, 2 threads) at the same global batch, NeuroFlux and BP, several seeds, on the
# whole Fashion-MNIST by default. Target: the mean over the seeds of 2 ranks within 0.3 points
# of 1 rank.
#
#   bash benches/mpi_accuracy.sh NF_BINARY OUT_DIR [nf train flags...]
#   e.g. cargo build --release -p nf-host --features mpi && cp target/release/nf /tmp/nf-mpi && \
#        bash benches/mpi_accuracy.sh /tmp/nf-mpi /tmp/mpi_accuracy
#
# Environment: DATA (default /usr/share/datasets/fashion-mnist), SEEDS (default "1 2 3"), EPOCHS
# (per block, default 3), BATCH (the global batch, default 128: one rank trains every block at
# --batch-min B --batch-max B, each of two ranks at B/2; an explicit --batch-max turns the
# --min-steps cap off, so nothing else moves the batch), BUDGET (per process, default 256MiB:
# large enough that the budget never lowers the batch).
#
# The runs go seed after seed (NF 1 rank, NF 2 ranks, BP 1 rank, BP 2 ranks), so a partial run is
# already a paired comparison. Each finished run appends one line to OUT_DIR/results.tsv (seed,
# mode, ranks, the last unit's test accuracy, the early exit's unit and test accuracy, the
# blocks' global batches, seconds); a run whose line is already there is skipped, so the
# script can be restarted after an interruption. The run directories stay in OUT_DIR. At the
# end (and with SUMMARY_ONLY=1, at once) it prints the mean over the seeds per configuration and
# the difference 2 ranks - 1 rank in points. Batch norm keeps per-rank batch statistics, so the
# two are close, not equal.
set -euo pipefail
nf=$(realpath "$1")
out=$(mkdir -p "$2" && realpath "$2")
shift 2
data=${DATA:-/usr/share/datasets/fashion-mnist}
seeds=${SEEDS:-1 2 3}
epochs=${EPOCHS:-3}
batch=${BATCH:-128}
budget=${BUDGET:-256MiB}
if ((batch % 2)); then
    echo "error: BATCH $batch: must be even (two ranks of BATCH/2)" >&2
    exit 2
fi
results=$out/results.tsv
[[ -f $results ]] || printf 'seed\tmode\tranks\tlast_test\texit_unit\texit_test\tglobal_batches\tseconds\n' >"$results"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

record() { # seed mode ranks run_dir
    python3 - "$@" >>"$results" <<'EOF'
import json, sys
seed, mode, ranks, run = sys.argv[1:5]
r = json.load(open(run + "/report.json"))
assert r["world"] == int(ranks), (run, r["world"])
e = r.get("exit") or {}
batches = ",".join(str(b["global_batch_size"]) for b in r["blocks"])
print("\t".join([seed, mode, ranks, "%.4f" % (100 * r["test_acc"]),
                 str(e.get("unit", "-")), "%.4f" % (100 * e["test_acc"]) if e else "-",
                 batches, "%.0f" % r["seconds_total"]]))
EOF
}

summary() {
    python3 - "$results" <<'EOF'
import sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
acc = defaultdict(dict)  # (mode, metric) -> ranks -> {seed: accuracy}
for seed, mode, ranks, last, _unit, exit_, batches, secs in rows:
    acc[(mode, "last unit")].setdefault(ranks, {})[seed] = float(last)
    if exit_ != "-" and mode != "bp":  # BP has no early exit: its "exit" is the last unit
        acc[(mode, "exit")].setdefault(ranks, {})[seed] = float(exit_)
print("| mode | accuracy | seeds | 1 rank | 2 ranks | 2r - 1r (points) |")
print("|---|---|---|---:|---:|---:|")
for (mode, metric), by in sorted(acc.items()):
    one, two = by.get("1", {}), by.get("2", {})
    both = sorted(set(one) & set(two))  # paired: only seeds that both finished
    if not both:
        continue
    m1 = sum(one[s] for s in both) / len(both)
    m2 = sum(two[s] for s in both) / len(both)
    print("| %s | %s | %s | %.2f%% | %.2f%% | %+.2f |" % (mode, metric, ",".join(both), m1, m2, m2 - m1))
EOF
}

if [[ ${SUMMARY_ONLY:-0} == 1 ]]; then
    summary
    exit 0
fi

for seed in $seeds; do
    for mode in neuroflux bp; do
        for ranks in 1 2; do
            if awk -F'\t' -v s="$seed" -v m="$mode" -v r="$ranks" \
                '$1 == s && $2 == m && $3 == r { found = 1 } END { exit !found }' "$results"; then
                continue
            fi
            run=$out/$mode-${ranks}r-seed$seed
            rm -rf "$run"
            common=(train --data "$data" --mode "$mode" --epochs "$epochs" --seed "$seed"
                --budget "$budget" --out "$run")
            echo "$(date -u +%H:%M:%S) seed $seed $mode ${ranks} rank(s)..."
            if ((ranks == 1)); then
                status=0
                "$nf" "${common[@]}" --threads 2 --batch-min "$batch" --batch-max "$batch" "$@" \
                    >"$run.log" 2>&1 || status=$?
            else
                status=0
                mpirun -np 2 --bind-to none --oversubscribe --allow-run-as-root \
                    "$nf" "${common[@]}" --threads 1 --ranks 2 \
                    --batch-min $((batch / 2)) --batch-max $((batch / 2)) "$@" >"$run.log" 2>&1 || status=$?
            fi
            if ((status != 0)); then # not recorded: a restart runs it again
                echo "run failed (exit $status): $run.log" >&2
                continue
            fi
            record "$seed" "$mode" "$ranks" "$run"
            tail -n 1 "$results"
        done
    done
done
summary
