#!/usr/bin/env bash
# The GPU check of NeuroFlux: one command on a machine with an NVIDIA GPU and no Rust toolchain.
#
# 1. Build the bundle where Rust is (any Linux x86-64 machine, no GPU needed):
#
#        bash scripts/gpu-check.sh --build            # -> target/gpu-bundle/ (about 1 minute
#                                                      #    when the release build is cached)
#
#    It runs `cargo build --release -p nf-host --bin nf` and
#    `cargo test -p nf-cuda --release --no-run`, and copies into target/gpu-bundle/: the `nf`
#    binary, the nf-cuda test executables `gpu` and `nvrtc` (as nf-cuda-gpu-tests and
#    nf-cuda-nvrtc-tests), this script and scripts/gpu_check.py (debug info stripped, so the
#    bundle stays small). target/ is git-ignored.
#
# 2. Carry it to the GPU machine, e.g.
#
#        tar czf gpu-bundle.tgz -C target gpu-bundle
#        scp gpu-bundle.tgz gpu-host: && ssh gpu-host 'tar xzf gpu-bundle.tgz && bash gpu-bundle/gpu-check.sh'
#
#    or, with a tool that carries ignored paths of the working tree, carry `target/gpu-bundle`
#    and run `bash target/gpu-bundle/gpu-check.sh --out "$OUT"`.
#
# 3. On the GPU machine (CUDA 13 driver; NVRTC and cuBLAS 13 from a CUDA toolkit or from the
#    pip wheels PyTorch brings; python3 with PyTorch), in under 5 minutes:
#
#        bash gpu-bundle/gpu-check.sh [--out DIR] [--images N]
#
#    - the GPU-vs-reference op tests and training-step tests of nf-cuda, and the NVRTC test;
#    - VGG-11 on synthetic 3x32x32 data (N images, default 10000, one epoch per block) with
#      `nf train --device cuda` under budgets 256 MiB and 1 GiB in `neuroflux` and `bp` modes,
#      recording images/s, the plan, the device memory the backend reports (report.json
#      `device_peak_bytes`) and nvidia-smi's peak;
#    - PyTorch backpropagation on the same VGG-11 under the same budgets (largest batch whose
#      torch.cuda.max_memory_allocated() fits), same number of images;
#    - one table with the ratios (printed, and saved as DIR/table.txt).
#
# Every step has a time limit; a failing step is reported in the table and the others still run.
# Exit status: 0 when the op tests passed and every run produced a result, 1 otherwise.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# --- Build mode (on the machine with Rust) ---------------------------------------------------
if [[ "${1:-}" == "--build" ]]; then
    set -e
    root="$(cd "$here/.." && pwd)"
    cd "$root"
    bundle="$root/target/gpu-bundle"
    rm -rf "$bundle"
    mkdir -p "$bundle"
    echo "=== cargo build --release -p nf-host --bin nf"
    cargo build --release -p nf-host --bin nf
    echo "=== cargo test -p nf-cuda --release --no-run"
    cargo test -p nf-cuda --release --no-run --message-format=json >"$bundle/.cargo-tests.json"
    python3 "$root/scripts/gpu_check.py" bundle "$bundle/.cargo-tests.json" "$bundle"
    rm -f "$bundle/.cargo-tests.json"
    cp target/release/nf "$bundle/nf"
    cp "$root/scripts/gpu-check.sh" "$root/scripts/gpu_check.py" "$bundle/"
    if command -v strip >/dev/null; then
        strip --strip-debug "$bundle/nf" "$bundle/nf-cuda-gpu-tests" "$bundle/nf-cuda-nvrtc-tests"
    fi
    chmod +x "$bundle"/nf "$bundle"/nf-cuda-*-tests "$bundle/gpu-check.sh"
    du -sh "$bundle"
    echo "bundle ready: $bundle  (run: bash $bundle/gpu-check.sh)"
    exit 0
fi

# --- Run mode (on the GPU machine) -----------------------------------------------------------
bundle="$here"
out=""
images=10000
while (($#)); do
    case "$1" in
    --out) out="$2"; shift 2 ;;
    --images) images="$2"; shift 2 ;;
    -h | --help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
out="${out:-$PWD/gpu-check-results}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
for f in nf nf-cuda-gpu-tests nf-cuda-nvrtc-tests gpu_check.py; do
    if [[ ! -e "$bundle/$f" ]]; then
        echo "gpu-check.sh: $bundle/$f is missing: build the bundle with 'bash scripts/gpu-check.sh --build'" \
            "on a machine with Rust and run the copy in target/gpu-bundle/" >&2
        exit 2
    fi
done

start=$SECONDS
deadline=$((start + 290)) # the whole check stays under 5 minutes
left() { echo $((deadline - SECONDS)); }
log() { echo "[gpu-check $((SECONDS - start))s] $*"; }
status=0

# NVRTC and cuBLAS: a CUDA toolkit, or the NVIDIA wheels next to PyTorch (nvidia/cu13/lib,
# nvidia/*/lib). cudarc finds them by name, so their directories go on LD_LIBRARY_PATH.
libdirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
    [[ -d "$d" ]] && libdirs+=("$d")
done
if command -v python3 >/dev/null; then
    while IFS= read -r d; do
        [[ -n "$d" ]] && libdirs+=("$d")
    done < <(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("site-packages")])
dirs = set()
for r in roots:
    for pat in ("libnvrtc.so.1*", "libcublas.so.1*", "libcublasLt.so.1*"):
        for f in glob.glob(os.path.join(r, "nvidia", "**", pat), recursive=True):
            dirs.add(os.path.dirname(f))
# CUDA 13 directories first.
for d in sorted(dirs, key=lambda d: ("cu13" not in d, d)):
    print(d)
EOF
    )
fi
if ((${#libdirs[@]})); then
    joined="$(IFS=:; echo "${libdirs[*]}")"
    export LD_LIBRARY_PATH="${joined}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv | tee "$out/nvidia-smi.txt"
else
    log "nvidia-smi not found"
fi

# --- 1. Op tests -----------------------------------------------------------------------------
log "op tests: nf-cuda-nvrtc-tests, nf-cuda-gpu-tests"
timeout 60 "$bundle/nf-cuda-nvrtc-tests" --nocapture --test-threads=1 2>&1 | tee "$out/nvrtc-tests.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { log "NVRTC tests FAILED"; status=1; }
timeout 150 "$bundle/nf-cuda-gpu-tests" --nocapture --test-threads=1 2>&1 | tee "$out/gpu-tests.txt"
rc=${PIPESTATUS[0]}
if [[ $rc != 0 ]]; then
    log "GPU op tests FAILED (exit $rc)"
    status=1
elif grep -q "^skipped: no CUDA device" "$out/gpu-tests.txt"; then
    log "GPU op tests were SKIPPED: no usable CUDA device (see above)"
    status=1
fi

# --- 2. nf train on the GPU ------------------------------------------------------------------
# Peak of the GPU's used memory (nvidia-smi, whole device, CUDA context included) while a
# command runs, minus the use before it started.
smi_peak_run() {
    local smi_file="$1"
    shift
    local before=0 pid=""
    if command -v nvidia-smi >/dev/null; then
        before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1)
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$smi_file" 2>/dev/null &
        pid=$!
    fi
    "$@"
    local rc=$?
    if [[ -n "$pid" ]]; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        local peak
        peak=$(sort -n "$smi_file" | tail -1)
        echo $(((${peak:-0} - ${before:-0}) * 1048576)) >"$smi_file.delta"
    fi
    return $rc
}

record() { # record FILE KEY=VALUE... (values are JSON)
    local file="$1"
    shift
    python3 - "$file" "$@" <<'EOF'
import json, sys
d = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        d[k] = json.loads(v)
    except ValueError:
        d[k] = v
json.dump(d, open(sys.argv[1], "w"), indent=1)
EOF
}

for budget_mib in 256 1024; do
    for mode in neuroflux bp; do
        name="nf-$mode-${budget_mib}MiB"
        dir="$out/$name"
        rm -rf "$dir"
        t=$(left)
        if ((t < 30)); then
            log "$name: skipped (time budget spent)"
            record "$out/$name.json" kind=nf mode="$mode" budget_bytes=$((budget_mib << 20)) dir="$dir" \
                status=skipped message="time budget spent"
            status=1
            continue
        fi
        limit=$((t < 75 ? t - 10 : 65))
        log "$name: nf train --device cuda (limit ${limit}s)"
        smi_peak_run "$out/$name.smi" timeout "$limit" "$bundle/nf" train --device cuda \
            --data "synthetic:3x32x32:$images" --model vgg11 --budget "${budget_mib}MiB" --mode "$mode" \
            --epochs 1 --val 0.1 --out "$dir" >"$out/$name.log" 2>&1
        rc=$?
        tail -3 "$out/$name.log"
        smi=$(cat "$out/$name.smi.delta" 2>/dev/null || echo null)
        if [[ $rc == 0 && -f "$dir/report.json" ]]; then
            st=ok msg=""
        elif [[ $rc == 124 ]]; then
            st=timeout msg="no result within ${limit}s"
            status=1
        else
            st=failed msg="$(grep -v '^\s*$' "$out/$name.log" | tail -1 | tr -d '"\\')"
            status=1
        fi
        record "$out/$name.json" kind=nf mode="$mode" budget_bytes=$((budget_mib << 20)) dir="$dir" \
            status="$st" message="$msg" smi_peak_bytes="$smi"
    done
done

# --- 3. PyTorch backpropagation --------------------------------------------------------------
for budget_mib in 256 1024; do
    name="torch-bp-${budget_mib}MiB"
    t=$(left)
    if ((t < 15)); then
        log "$name: skipped (time budget spent)"
        record "$out/$name.json" kind=torch budget_bytes=$((budget_mib << 20)) error="skipped: time budget spent"
        status=1
        continue
    fi
    log "$name: PyTorch VGG-11 (limit $((t - 5))s)"
    if ! timeout $((t - 5)) python3 "$bundle/gpu_check.py" torch --budget $((budget_mib << 20)) \
        --images "$images" --out "$out/$name.json" 2>&1 | tail -5; then
        status=1
    fi
    if [[ ! -f "$out/$name.json" ]]; then
        record "$out/$name.json" kind=torch budget_bytes=$((budget_mib << 20)) error="PyTorch run failed or timed out"
        status=1
    fi
done

# --- 4. The table ----------------------------------------------------------------------------
python3 "$bundle/gpu_check.py" table "$out" | tee "$out/table.txt"
log "done in $((SECONDS - start))s; results in $out"
exit $status
