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
#        bash gpu-bundle/gpu-check.sh [--out DIR] [--images N] [--work DIR] [--keep]
#                                     [--lib-dir DIR]... [--torch-python PYTHON]
#
#    - preflight: the device, the CUDA driver, NVRTC and cuBLAS versions and the library files
#      nf loads (they may come from a toolkit or from PyTorch's wheels);
#    - the NVRTC test and the GPU-vs-reference op and training-step tests of nf-cuda, with
#      NF_REQUIRE_NVRTC=1 and NF_REQUIRE_GPU=1 (a missing driver, device, NVRTC or cuBLAS fails
#      them instead of skipping); when the GPU tests fail they run again with
#      NF_CUDA_SYNC_EACH=1 and CUDA_LAUNCH_BLOCKING=1, so a kernel fault is reported under the
#      name of the kernel or GEMM that caused it;
#    - VGG-11 on synthetic 3x32x32 data (N images, default 10000, 10% held out, one epoch per
#      block) with `nf train --device cuda` under budgets 256 MiB and 1 GiB in `neuroflux` and
#      `bp` modes: images/s (training only, and end to end with evaluation and the activation
#      cache), the plan, the backend's one allocation, the driver-seen memory and nvidia-smi's;
#    - PyTorch backpropagation on the same VGG-11 under the same budgets (largest batch whose
#      torch.cuda.max_memory_allocated() fits), as many training images, warm-up counted as
#      nf's is, plus an evaluation pass for the end-to-end figure;
#    - one table with the ratios and the checks.
#
#    Everything bulky stays in the work folder (default: a new folder under $TMPDIR or /tmp,
#    removed at the end unless --keep): nf's runs write ~37 files and ~320 MB each. The output
#    folder (--out, default ./gpu-check-results) receives three small files only:
#      table.txt      the table (also the last thing printed on stdout)
#      results.json   every record: preflight, test summaries, nf reports, PyTorch results
#      logs.tgz       the logs (each cut to its last 2 MiB; the archive stays under 15 MiB)
#
#    Library paths (--lib-dir, the CUDA toolkit's, and the NVIDIA wheels' next to PyTorch)
#    are given to nf and the test executables only; python runs with the environment as is.
#
# Every step has a time limit; a failing step is reported in the table and the others still run.
# Exit status: 0 when every check in the table passed, 1 otherwise, 2 for a usage error.
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
work=""
keep=0
images=10000
torch_python="python3"
extra_libs=()
while (($#)); do
    case "$1" in
    --out) out="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --images) images="$2"; shift 2 ;;
    --lib-dir) extra_libs+=("$2"); shift 2 ;;
    --torch-python) torch_python="$2"; shift 2 ;;
    -h | --help) sed -n '2,56p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for f in nf nf-cuda-gpu-tests nf-cuda-nvrtc-tests gpu_check.py; do
    if [[ ! -e "$bundle/$f" ]]; then
        echo "gpu-check.sh: $bundle/$f is missing: build the bundle with 'bash scripts/gpu-check.sh --build'" \
            "on a machine with Rust and run the copy in target/gpu-bundle/" >&2
        exit 2
    fi
done
out="${out:-$PWD/gpu-check-results}"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
rm -f "$out/table.txt" "$out/results.json" "$out/logs.tgz"
if [[ -z "$work" ]]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/nf-gpu-check.XXXXXX")" || exit 2
else
    mkdir -p "$work" || exit 2
    work="$(cd "$work" && pwd)"
fi
if [[ "$work" == "$out" || "$work" == "$out"/* ]]; then
    echo "gpu-check.sh: --work must not be inside --out ($out)" >&2
    exit 2
fi
logs="$work/logs" records="$work/records" runs="$work/runs"
mkdir -p "$logs" "$records" "$runs"
# The work folder goes at the end (silently: the table stays the last thing printed).
trap '((keep)) || rm -rf "$work"' EXIT

start=$SECONDS
deadline=$((start + 290)) # the whole check stays under 5 minutes
left() { echo $((deadline - SECONDS)); }
log() { echo "[gpu-check $((SECONDS - start))s] $*"; }
py() { python3 "$bundle/gpu_check.py" "$@"; }

# NVRTC and cuBLAS: a CUDA toolkit, or the NVIDIA wheels next to PyTorch (nvidia/cu13/lib,
# nvidia/*/lib). cudarc finds them by name, so their directories go on LD_LIBRARY_PATH, for
# nf and the test executables only (`nfenv`).
libdirs=(${extra_libs[@]+"${extra_libs[@]}"})
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
    [[ -d "$d" ]] && libdirs+=("$d")
done
if command -v "$torch_python" >/dev/null; then
    while IFS= read -r d; do
        [[ -n "$d" ]] && libdirs+=("$d")
    done < <("$torch_python" - <<'EOF' 2>/dev/null
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
nf_ld="$(IFS=:; echo "${libdirs[*]}")"
nf_ld="${nf_ld}${LD_LIBRARY_PATH:+${nf_ld:+:}$LD_LIBRARY_PATH}"
nfenv=(env "LD_LIBRARY_PATH=$nf_ld")
log "work folder $work ($( ((keep)) && echo kept || echo removed at the end)); results to $out"
log "library path for nf and the tests: ${nf_ld:-(none)}"
py record "$records/environment.json" kind=environment "nf_library_path=$nf_ld" \
    images:="$images" "torch_python=$torch_python" >/dev/null
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | tee "$logs/nvidia-smi.txt"
else
    log "nvidia-smi not found"
fi

# --- 1. Preflight and op tests ---------------------------------------------------------------
log "preflight"
NF_REQUIRE_GPU=1 timeout 60 "${nfenv[@]}" "$bundle/nf-cuda-gpu-tests" --exact gpu_preflight --nocapture \
    --test-threads=1 >"$logs/preflight.txt" 2>&1
grep -h "preflight:" "$logs/preflight.txt" || { log "preflight FAILED:"; tail -5 "$logs/preflight.txt"; }

log "op tests: nf-cuda-nvrtc-tests (NF_REQUIRE_NVRTC=1), nf-cuda-gpu-tests (NF_REQUIRE_GPU=1)"
NF_REQUIRE_NVRTC=1 timeout 60 "${nfenv[@]}" "$bundle/nf-cuda-nvrtc-tests" --nocapture --test-threads=1 \
    >"$logs/nvrtc-tests.txt" 2>&1
nvrtc_rc=$?
NF_REQUIRE_GPU=1 timeout 150 "${nfenv[@]}" "$bundle/nf-cuda-gpu-tests" --nocapture --test-threads=1 \
    >"$logs/gpu-tests.txt" 2>&1
gpu_rc=$?
grep -h "^test result\|skipped:\|panicked\|^GPU\|^NVRTC" "$logs/nvrtc-tests.txt" "$logs/gpu-tests.txt" | cut -c1-200
rerun_rc=null
if [[ $gpu_rc != 0 ]]; then
    t=$(left)
    log "GPU tests FAILED (exit $gpu_rc): again with NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1 (limit $((t > 100 ? 90 : t / 2))s)"
    NF_REQUIRE_GPU=1 NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1 timeout $((t > 100 ? 90 : t / 2)) \
        "${nfenv[@]}" "$bundle/nf-cuda-gpu-tests" --nocapture --test-threads=1 >"$logs/gpu-tests-sync-each.txt" 2>&1
    rerun_rc=$?
    grep -h "panicked\|failed (NF_CUDA_SYNC_EACH\|^test result" "$logs/gpu-tests-sync-each.txt" | head -5 | cut -c1-300
fi
py record "$records/tests.json" kind=tests nvrtc_rc:="$nvrtc_rc" gpu_rc:="$gpu_rc" rerun_rc:="$rerun_rc" >/dev/null

# --- 2. nf train on the GPU ------------------------------------------------------------------
# Peak of the GPU's used memory (nvidia-smi, whole device, CUDA context included) while a
# command runs, minus the use before it started: writes FILE.delta (bytes).
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

for budget_mib in 256 1024; do
    for mode in neuroflux bp; do
        name="nf-$mode-${budget_mib}MiB"
        dir="$runs/$name"
        rm -rf "$dir"
        t=$(left)
        if ((t < 30)); then
            log "$name: skipped (time budget spent)"
            py record "$records/$name.json" kind=nf mode="$mode" budget_bytes:=$((budget_mib << 20)) \
                "dir=$dir" status=skipped "message=time budget spent" >/dev/null
            continue
        fi
        limit=$((t < 75 ? t - 10 : 65))
        log "$name: nf train --device cuda (limit ${limit}s)"
        smi_peak_run "$logs/$name.smi" timeout "$limit" "${nfenv[@]}" "$bundle/nf" train --device cuda \
            --data "synthetic:3x32x32:$images" --model vgg11 --budget "${budget_mib}MiB" --mode "$mode" \
            --epochs 1 --val 0.1 --out "$dir" >"$logs/$name.log" 2>&1
        rc=$?
        tail -2 "$logs/$name.log" | cut -c1-200
        smi=$(cat "$logs/$name.smi.delta" 2>/dev/null || echo null)
        if [[ $rc == 0 && -f "$dir/report.json" ]]; then
            st=ok msg=""
        elif [[ $rc == 124 ]]; then
            st=timeout msg="no result within ${limit}s"
        else
            st=failed msg="$(grep -v '^\s*$' "$logs/$name.log" | tail -1 | cut -c1-300)"
        fi
        py record "$records/$name.json" kind=nf mode="$mode" budget_bytes:=$((budget_mib << 20)) \
            "dir=$dir" status="$st" "message=$msg" smi_peak_bytes:="$smi" >/dev/null
        [[ -f "$dir/report.json" ]] && cp "$dir/report.json" "$logs/$name.report.json"
    done
done

# --- 3. PyTorch backpropagation --------------------------------------------------------------
# nf trains on the images left after the 10% validation split and evaluates the validation and
# test splits (test: a fifth of N) in its end-to-end time; PyTorch does as many.
train_n=$((images - images / 10))
eval_n=$((images / 10 + (images + 4) / 5))
for budget_mib in 256 1024; do
    name="torch-bp-${budget_mib}MiB"
    t=$(left)
    if ((t < 15)); then
        log "$name: skipped (time budget spent)"
        py record "$records/$name.json" kind=torch budget_bytes:=$((budget_mib << 20)) \
            "error=skipped: time budget spent" >/dev/null
        continue
    fi
    log "$name: PyTorch VGG-11 (limit $((t - 5))s)"
    smi_peak_run "$logs/$name.smi" timeout $((t - 5)) "$torch_python" "$bundle/gpu_check.py" torch \
        --budget $((budget_mib << 20)) --images "$train_n" --eval-images "$eval_n" \
        --out "$records/$name.json" >"$logs/$name.log" 2>&1
    tail -2 "$logs/$name.log" | cut -c1-200
    if [[ ! -f "$records/$name.json" ]]; then
        py record "$records/$name.json" kind=torch budget_bytes:=$((budget_mib << 20)) \
            "error=PyTorch run failed or timed out: $(tail -1 "$logs/$name.log" | cut -c1-200)" >/dev/null
    fi
    smi=$(cat "$logs/$name.smi.delta" 2>/dev/null || echo null)
    py record-add "$records/$name.json" smi_peak_bytes:="$smi" >/dev/null
done

# --- 4. Results: logs.tgz, then results.json and the table (the last thing on stdout) ---------
log "done in $((SECONDS - start))s; writing $out/logs.tgz, results.json, table.txt"
py bundle-logs "$logs" "$out/logs.tgz"
py record "$records/bundle.json" kind=bundle logs_rc:=$? "logs_bytes:=$(wc -c <"$out/logs.tgz" 2>/dev/null || echo null)" >/dev/null
py collect "$work" "$out"
exit $?
