#!/usr/bin/env bash
# Data-parallel throughput on this machine: 1 rank x 1 thread, 1 rank x 2 threads and 2 ranks x
# 1 thread (mpirun), interleaved round after round (the machine drifts over minutes), vgg-small
# on the bundled data or --data. Prints each run's training images/s (all ranks together: the
# blocks' images over their training seconds, from report.json) and the bytes all-reduced per
# step of each block.
#
#   bash benches/mpi_scaling.sh NF_BINARY ROUNDS [nf train flags...]
#   e.g. cargo build --release -p nf-host --features mpi && \
#        bash benches/mpi_scaling.sh target/release/nf 3 --limit 4000 --epochs 1
set -euo pipefail
nf=$(realpath "$1")
rounds=$2
shift 2
work=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rate() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
b=r["blocks"]; print("%.1f" % (sum(x["images_per_sec"]*x["train_seconds"] for x in b)/sum(x["train_seconds"] for x in b)))' "$1/report.json"
}
for round in $(seq "$rounds"); do
    for cfg in 1x1 1x2 2x1; do
        out="$work/$cfg-$round"
        case $cfg in
        1x1) "$nf" train --threads 1 --out "$out" "$@" >/dev/null ;;
        1x2) "$nf" train --threads 2 --out "$out" "$@" >/dev/null ;;
        2x1) mpirun --oversubscribe --bind-to none -np 2 "$nf" train --threads 1 --ranks 2 --out "$out" "$@" >/dev/null ;;
        esac
        echo "round $round $cfg: $(rate "$out") images/s"
    done
done
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
for i,b in enumerate(r["blocks"]): print("block %d: batch %d per rank (global %d), %d bytes all-reduced per step, %d steps per epoch" % (i, b["batch_size"], b["global_batch_size"], b["allreduce_bytes_per_step"], -(-(r["samples"]["train"]//r["world"])//b["batch_size"])))' "$work/2x1-1/report.json"
rm -rf "$work"
