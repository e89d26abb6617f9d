#!/usr/bin/env bash
# The GPU check of NeuroFlux: one command on a machine with an NVIDIA GPU and no Rust toolchain.
#
# 1. Build the bundle where Rust is (any Linux x86-64 machine, no GPU needed):
#
#        bash scripts/gpu-check.sh --build            # -> target/gpu-bundle/
#
#    It builds `nf` and the nf-cuda test executables `gpu` and `nvrtc` for glibc 2.28 (RHEL/Rocky
#    8, Ubuntu 20.04 and newer: where PyTorch's wheels run) with `cargo zigbuild` (cargo-zigbuild
#    and the zig toolchain from PyPI, installed on first use into $NF_ZIG_HOME, default
#    ~/.cache/nf-zigbuild), checks with `objdump -T` that no binary needs a newer glibc symbol
#    (the build fails otherwise), and copies into target/gpu-bundle/: `nf`, the test executables
#    (as nf-cuda-gpu-tests and nf-cuda-nvrtc-tests), this script, scripts/gpu_check.py and
#    gpu_check_table.py, and bundle-glibc.txt (the newest glibc version the binaries need);
#    debug info stripped. target/ is git-ignored.
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
#    pip wheels PyTorch brings; python3 with PyTorch), in under 7 minutes:
#
#        bash gpu-bundle/gpu-check.sh [--out DIR] [--images N] [--work DIR] [--keep]
#                                     [--lib-dir DIR]... [--torch-python PYTHON]
#
#    - preflight: whether this machine's glibc runs the bundle; the CUDA 13 library files
#      chosen (--lib-dir, PyTorch's NVIDIA wheels, /usr/local/cuda*, LD_LIBRARY_PATH; never a
#      `stubs` folder), linked into one folder that goes first on the library path of nf and the
#      tests, so that no other NVRTC or cuBLAS (a CUDA 12 toolkit's) is loaded; the device, the
#      driver, NVRTC and cuBLAS versions and the files the tests loaded;
#    - an NCCL smoke run (a world of one: nf-cuda's nccl_world_of_one with NF_REQUIRE_NCCL=1;
#      libnccl.so.2 is linked into the folder as libnccl.so, the name cudarc opens);
#    - the NVRTC test and the GPU-vs-reference op and training-step tests of nf-cuda, with
#      NF_REQUIRE_NVRTC=1 and NF_REQUIRE_GPU=1 (a missing driver, device, NVRTC or cuBLAS fails
#      them instead of skipping); when the GPU tests fail they run again with
#      NF_CUDA_SYNC_EACH=1 and CUDA_LAUNCH_BLOCKING=1, so a kernel fault is reported under the
#      name of the kernel or GEMM that caused it;
#    - VGG-11 on synthetic 3x32x32 data (N images, default 10000, 10% held out, one epoch per
#      block) with `nf train --device cuda` under budgets 256 MiB and 1 GiB in `neuroflux` and
#      `bp` modes, each in both precisions (`--precision f32`, and `bf16`: bf16 GEMM operands on
#      tensor cores; these runs are named with a -bf16 suffix): images/s (training only, and end to end with evaluation and the activation
#      cache), the plan, the backend's one allocation, the driver-seen memory and nvidia-smi's
#      (null where nvidia-smi answers [N/A] or the like); the first run that fails runs once
#      more, on 1000 images, with NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1;
#    - PyTorch backpropagation on the same VGG-11 under the same budgets (largest batch whose
#      torch.cuda.max_memory_allocated() fits), as many training images, warm-up counted as
#      nf's is, plus an evaluation pass for the end-to-end figure;
#    - one table: first whether this machine could run everything (and if not, why), then the
#      speeds, ratios and memory, the checks (PASS/FAIL) and the findings (the speed targets:
#      a missed target is a finding, not a failure of the check).
#
#    Everything bulky stays in the work folder (default: a new folder under $TMPDIR or /tmp,
#    removed at the end unless --keep): nf's runs write ~37 files and ~320 MB each. The output
#    folder (--out, default ./gpu-check-results) receives three small files only, rewritten
#    after every stage and on SIGTERM/SIGINT, so a check cut short still returns what it did:
#      table.txt      the table (also the last thing printed on stdout)
#      results.json   every record: preflight, test summaries, nf reports, PyTorch results
#      logs.tgz       the logs (each cut to its last 2 MiB; the archive stays under 15 MiB)
#
#    Library paths are given to nf and the test executables only; python runs with the
#    environment as is.
#
# The whole check stays under 420 s (8 nf runs: 2 budgets x 2 modes x 2 precisions): every
# stage's time limit is cut to the time left, a stage with no time left is skipped (and said
# so), and a failing stage does not stop the others.
# Exit status: 0 when every check in the table passed (findings do not count), 1 otherwise,
# 2 for a usage error, 128 + the signal's number when interrupted.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# --- Build mode (on the machine with Rust) ---------------------------------------------------
if [[ "${1:-}" == "--build" ]]; then
    set -e
    root="$(cd "$here/.." && pwd)"
    cd "$root"
    glibc=2.28
    target=x86_64-unknown-linux-gnu
    zig_home="${NF_ZIG_HOME:-$HOME/.cache/nf-zigbuild}"
    zig_packages=('ziglang==0.17.1' 'cargo-zigbuild==0.24.1')
    export PATH="$zig_home/bin:$PATH" PYTHONPATH="$zig_home${PYTHONPATH:+:$PYTHONPATH}"
    if command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1; then
        echo "=== cargo-zigbuild $(cargo-zigbuild --version | cut -d' ' -f2), zig $(python3 -m ziglang version) ($zig_home)"
    else
        echo "=== installing ${zig_packages[*]} into $zig_home (pip)"
        installed=0
        for attempt in 1 2 3; do
            if PIP_ROOT_USER_ACTION=ignore timeout 600 python3 -m pip install --quiet \
                --disable-pip-version-check --no-input --retries 2 --timeout 30 --upgrade \
                --target "$zig_home" "${zig_packages[@]}"; then
                installed=1
                break
            fi
            sleep $((attempt * 10))
        done
        if ((!installed)) || ! python3 -m ziglang version >/dev/null; then
            echo "error: could not install ${zig_packages[*]} (python3 -m pip install --target $zig_home)" >&2
            exit 1
        fi
    fi
    bundle="$root/target/gpu-bundle"
    rm -rf "$bundle"
    mkdir -p "$bundle"
    echo "=== cargo zigbuild --release -p nf-host --bin nf --target $target.$glibc"
    cargo zigbuild --release -p nf-host --bin nf --target "$target.$glibc"
    # (`cargo zigbuild` builds only; the test subcommand is cargo-zigbuild's own.)
    # The `nccl` feature adds the NCCL smoke test to the GPU tests (NCCL is loaded at run time).
    echo "=== cargo-zigbuild test -p nf-cuda --release --no-run --features nccl --target $target.$glibc"
    cargo-zigbuild test -p nf-cuda --release --no-run --features nccl --target "$target.$glibc" \
        --message-format=json >"$bundle/.cargo-tests.json"
    python3 "$root/scripts/gpu_check.py" bundle "$bundle/.cargo-tests.json" "$bundle"
    rm -f "$bundle/.cargo-tests.json"
    cp "target/$target/release/nf" "$bundle/nf"
    cp "$root/scripts/gpu-check.sh" "$root/scripts/gpu_check.py" "$root/scripts/gpu_check_table.py" "$bundle/"
    if command -v strip >/dev/null; then
        strip --strip-debug "$bundle/nf" "$bundle/nf-cuda-gpu-tests" "$bundle/nf-cuda-nvrtc-tests"
    fi
    chmod +x "$bundle"/nf "$bundle"/nf-cuda-*-tests "$bundle/gpu-check.sh"
    echo "=== objdump -T: the newest glibc symbol version the binaries need (at most $glibc)"
    python3 "$root/scripts/gpu_check.py" glibc-check "$glibc" "$bundle/bundle-glibc.txt" \
        "$bundle/nf" "$bundle/nf-cuda-gpu-tests" "$bundle/nf-cuda-nvrtc-tests"
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
    -h | --help) sed -n '2,68p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for f in nf nf-cuda-gpu-tests nf-cuda-nvrtc-tests gpu_check.py gpu_check_table.py; do
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
deadline=$((start + 420)) # the whole check stays under 7 minutes
finish_reserve=10         # seconds kept for writing the results
log() { echo "[gpu-check $((SECONDS - start))s] $*"; }
py() { python3 "$bundle/gpu_check.py" "$@"; }
# Seconds a stage that wants $1 may take: its own limit cut to the time left (0: none left).
limit_for() {
    local t=$((deadline - finish_reserve - SECONDS))
    ((t < 0)) && t=0
    echo $(($1 < t ? $1 : t))
}

# The three result files, rewritten after every stage (quietly) and at the end (the table is
# then the last thing printed): whatever stops the check later, they hold what it did so far.
write_results() {
    py results "$work" "$out" "$@"
}

# One stage's command, in the background so that a signal is handled at once: `run_step
# LIMIT LOG CMD...` runs CMD under `timeout LIMIT` (which signals CMD's whole process group),
# its output to LOG; the exit status is CMD's (124 on timeout).
step_pid=""
smi_pid=""
run_step() {
    local limit=$1 logfile=$2
    shift 2
    timeout "$limit" "$@" >"$logfile" 2>&1 &
    step_pid=$!
    wait "$step_pid"
    local rc=$?
    step_pid=""
    return $rc
}

on_signal() {
    local sig=$1 code=$2
    trap '' TERM INT
    log "interrupted by SIG$sig: stopping the stage that runs and writing the results"
    [[ -n "$step_pid" ]] && kill -TERM "$step_pid" 2>/dev/null && wait "$step_pid" 2>/dev/null
    [[ -n "$smi_pid" ]] && kill "$smi_pid" 2>/dev/null && wait "$smi_pid" 2>/dev/null
    py record "$records/interrupted.json" kind=interrupted "signal=SIG$sig" \
        seconds:=$((SECONDS - start)) >/dev/null
    write_results
    exit "$code"
}
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT

# --- 0. Can this machine run the bundle? ------------------------------------------------------
need_glibc="$(cat "$bundle/bundle-glibc.txt" 2>/dev/null || echo unknown)"
have_glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
can_run="$(py glibc-runs "${have_glibc:-unknown}" "$need_glibc")"
py record "$records/machine.json" kind=machine "glibc=${have_glibc:-unknown}" \
    "glibc_needed=$need_glibc" "runs=$can_run" >/dev/null
log "glibc: this machine ${have_glibc:-unknown}, the bundle needs $need_glibc or newer: $can_run"

# --- 1. The CUDA 13 libraries: one folder of links, first on the library path ----------------
# Candidate folders in order: --lib-dir, the NVIDIA wheels next to PyTorch (cu13 first), the
# CUDA toolkits, then LD_LIBRARY_PATH. cudarc tries the unversioned names (libnvrtc.so,
# libcublas.so) first and accepts CUDA 12's; the folder holds those names too, pointing at the
# CUDA 13 files, so nothing else can be picked. Folders named `stubs` never count.
libdirs=(${extra_libs[@]+"${extra_libs[@]}"})
if command -v "$torch_python" >/dev/null; then
    while IFS= read -r d; do
        [[ -n "$d" ]] && libdirs+=("$d")
    done < <(timeout 30 "$torch_python" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("site-packages")])
dirs = set()
for r in roots:
    for pat in ("libnvrtc.so.1*", "libcublas.so.1*", "libcublasLt.so.1*", "libnccl.so.2*"):
        for f in glob.glob(os.path.join(r, "nvidia", "**", pat), recursive=True):
            dirs.add(os.path.dirname(f))
# CUDA 13 directories first.
for d in sorted(dirs, key=lambda d: ("cu13" not in d, d)):
    print(d)
EOF
    )
fi
for d in /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib \
    /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d "$d" ]] && libdirs+=("$d")
done
IFS=: read -r -a ld_dirs <<<"${LD_LIBRARY_PATH:-}"
libdirs+=(${ld_dirs[@]+"${ld_dirs[@]}"})
# Last, the system's own folder (where a libnccl2 package puts libnccl.so.2).
[[ -d /usr/lib/x86_64-linux-gnu ]] && libdirs+=(/usr/lib/x86_64-linux-gnu)
cuda_lib="$work/cuda13-lib"
py cuda-libs "$cuda_lib" "$records/libraries.json" ${libdirs[@]+"${libdirs[@]}"} | tee "$logs/libraries.txt"
# nf and the tests: the folder first, then LD_LIBRARY_PATH without `stubs` folders (the driver,
# libcuda.so.1, comes from the system's loader paths).
nf_ld="$cuda_lib"
for d in ${ld_dirs[@]+"${ld_dirs[@]}"}; do
    [[ -n "$d" && "/$d/" != */stubs/* ]] && nf_ld="$nf_ld:$d"
done
nfenv=(env "LD_LIBRARY_PATH=$nf_ld")
log "work folder $work ($( ((keep)) && echo kept || echo removed at the end)); results to $out"
log "library path for nf and the tests: $nf_ld"
py record "$records/environment.json" kind=environment "nf_library_path=$nf_ld" \
    images:="$images" "torch_python=$torch_python" >/dev/null
if command -v nvidia-smi >/dev/null; then
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 |
        tee "$logs/nvidia-smi.txt"
else
    log "nvidia-smi not found"
fi
write_results --quiet

# --- 2. Preflight and op tests ---------------------------------------------------------------
# `stage_limit WANT MIN [bin]`: the time limit of a stage that wants WANT seconds, cut to the
# time left; or, with status 1, why it cannot run: less than MIN seconds left, or (`bin`) it
# runs the bundle's binaries and this machine's glibc is too old for them.
stage_limit() {
    local t
    t=$(limit_for "$1")
    if [[ "${3:-}" == bin && "$can_run" == no* ]]; then
        echo "not run: ${can_run#no: }"
        return 1
    fi
    if ((t < $2)); then
        echo "skipped: time budget spent"
        return 1
    fi
    echo "$t"
}
# `skip_stage NAME WHY`: say and record that a stage did not run.
skip_stage() {
    log "$1: $2"
    py record "$records/skipped-$1.json" kind=skipped "stage=$1" "message=$2" >/dev/null
}

if t=$(stage_limit 60 5 bin); then
    log "preflight (limit ${t}s)"
    NF_REQUIRE_GPU=1 run_step "$t" "$logs/preflight.txt" "${nfenv[@]}" "$bundle/nf-cuda-gpu-tests" \
        --exact gpu_preflight --nocapture --test-threads=1
    grep -h "preflight:" "$logs/preflight.txt" || { log "preflight FAILED:"; tail -5 "$logs/preflight.txt"; }
else
    skip_stage preflight "$t"
fi
write_results --quiet

nvrtc_rc=null gpu_rc=null rerun_rc=null
if t=$(stage_limit 60 5 bin); then
    log "op tests: nf-cuda-nvrtc-tests (NF_REQUIRE_NVRTC=1, limit ${t}s)"
    NF_REQUIRE_NVRTC=1 run_step "$t" "$logs/nvrtc-tests.txt" "${nfenv[@]}" "$bundle/nf-cuda-nvrtc-tests" \
        --nocapture --test-threads=1
    nvrtc_rc=$?
else
    skip_stage nvrtc-tests "$t"
fi
if t=$(stage_limit 150 5 bin); then
    log "op tests: nf-cuda-gpu-tests (NF_REQUIRE_GPU=1, limit ${t}s)"
    NF_REQUIRE_GPU=1 run_step "$t" "$logs/gpu-tests.txt" "${nfenv[@]}" "$bundle/nf-cuda-gpu-tests" \
        --nocapture --test-threads=1 --skip nccl_world_of_one
    gpu_rc=$?
else
    skip_stage gpu-tests "$t"
fi
grep -h "^test result\|skipped:\|panicked\|^GPU\|^NVRTC" "$logs/nvrtc-tests.txt" "$logs/gpu-tests.txt" 2>/dev/null | cut -c1-200
if [[ $gpu_rc != null && $gpu_rc != 0 ]] && t=$(stage_limit 90 10 bin); then
    t=$((t > 20 ? t / 2 + 10 : t))
    log "GPU tests FAILED (exit $gpu_rc): again with NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1 (limit ${t}s)"
    NF_REQUIRE_GPU=1 NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1 run_step "$t" "$logs/gpu-tests-sync-each.txt" \
        "${nfenv[@]}" "$bundle/nf-cuda-gpu-tests" --nocapture --test-threads=1 --skip nccl_world_of_one
    rerun_rc=$?
    grep -h "panicked\|failed (NF_CUDA_SYNC_EACH\|^test result" "$logs/gpu-tests-sync-each.txt" | head -5 | cut -c1-300
fi
# NCCL smoke run: a world of one (two ranks cannot share one GPU under NCCL): a communicator on
# the backend's GPU and stream, its in-arena mean and host reductions. NF_REQUIRE_NCCL=1: no
# NCCL library fails it.
nccl_rc=null
if t=$(stage_limit 40 5 bin); then
    log "NCCL smoke: nf-cuda-gpu-tests --exact nccl_world_of_one (NF_REQUIRE_NCCL=1, limit ${t}s)"
    NF_REQUIRE_GPU=1 NF_REQUIRE_NCCL=1 run_step "$t" "$logs/nccl-smoke.txt" "${nfenv[@]}" \
        "$bundle/nf-cuda-gpu-tests" --exact nccl_world_of_one --nocapture --test-threads=1
    nccl_rc=$?
    grep -h "^nccl\|^test result\|panicked" "$logs/nccl-smoke.txt" | head -3 | cut -c1-200
else
    skip_stage nccl-smoke "$t"
fi
py record "$records/tests.json" kind=tests nvrtc_rc:="$nvrtc_rc" gpu_rc:="$gpu_rc" rerun_rc:="$rerun_rc" \
    nccl_rc:="$nccl_rc" >/dev/null
write_results --quiet

# --- 3. nf train on the GPU ------------------------------------------------------------------
# `smi_run FILE LIMIT LOG CMD...`: run_step, sampling nvidia-smi's used memory meanwhile into
# FILE (whole device, CUDA context included); FILE.before holds the use before the start. The
# peak beyond it is worked out by `gpu_check.py smi-peak` (null when nvidia-smi has no number).
smi_run() {
    local smi_file=$1
    shift
    : >"$smi_file"
    if command -v nvidia-smi >/dev/null; then
        timeout 10 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 \
            >"$smi_file.before" 2>/dev/null
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 >"$smi_file" 2>/dev/null &
        smi_pid=$!
    fi
    run_step "$@"
    local rc=$?
    if [[ -n "$smi_pid" ]]; then
        kill "$smi_pid" 2>/dev/null
        wait "$smi_pid" 2>/dev/null
        smi_pid=""
    fi
    return $rc
}

nf_rerun_done=0
for budget_mib in 256 1024; do
    for job in neuroflux/f32 bp/f32 neuroflux/bf16 bp/bf16; do
        mode=${job%/*} precision=${job#*/}
        # f32 runs keep their names; bf16 runs (--precision bf16: bf16 GEMM operands on tensor
        # cores) get a -bf16 suffix.
        name="nf-$mode-${budget_mib}MiB"
        [[ $precision == f32 ]] || name="$name-$precision"
        dir="$runs/$name"
        rm -rf "$dir"
        if ! t=$(stage_limit 65 20 bin); then
            log "$name: $t"
            py record "$records/$name.json" kind=nf mode="$mode" precision="$precision" \
                budget_bytes:=$((budget_mib << 20)) "dir=$dir" status=skipped "message=$t" >/dev/null
            continue
        fi
        log "$name: nf train --device cuda --precision $precision (limit ${t}s)"
        smi_run "$logs/$name.smi" "$t" "$logs/$name.log" "${nfenv[@]}" "$bundle/nf" train --device cuda \
            --data "synthetic:3x32x32:$images" --model vgg11 --budget "${budget_mib}MiB" --mode "$mode" \
            --precision "$precision" --epochs 1 --val 0.1 --out "$dir"
        rc=$?
        tail -2 "$logs/$name.log" | cut -c1-200
        smi=$(py smi-peak "$logs/$name.smi")
        if [[ $rc == 0 && -f "$dir/report.json" ]]; then
            st=ok msg=""
        elif [[ $rc == 124 ]]; then
            st=timeout msg="no result within ${t}s"
        else
            st=failed msg="$(grep -v '^\s*$' "$logs/$name.log" | tail -1 | cut -c1-300)"
        fi
        py record "$records/$name.json" kind=nf mode="$mode" precision="$precision" \
            budget_bytes:=$((budget_mib << 20)) "dir=$dir" status="$st" "message=$msg" \
            smi_peak_bytes:="$smi" >/dev/null
        [[ -f "$dir/report.json" ]] && cp "$dir/report.json" "$logs/$name.report.json"
        # The first failure while running (not a timeout, not exit 2: nf refused its arguments or
        # found no GPU) runs once more, short, waiting after every kernel and GEMM, so that a
        # fault is named by the call that caused it.
        if [[ $st == failed && $rc != 2 && $nf_rerun_done == 0 ]] && t=$(stage_limit 45 15 bin); then
            nf_rerun_done=1
            log "$name FAILED (exit $rc): again on 1000 images with NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1 (limit ${t}s)"
            rm -rf "$dir-sync-each"
            NF_CUDA_SYNC_EACH=1 CUDA_LAUNCH_BLOCKING=1 run_step "$t" "$logs/$name-sync-each.log" \
                "${nfenv[@]}" "$bundle/nf" train --device cuda --data "synthetic:3x32x32:1000" \
                --model vgg11 --budget "${budget_mib}MiB" --mode "$mode" --precision "$precision" \
                --epochs 1 --val 0.1 --out "$dir-sync-each"
            rrc=$?
            rmsg="$(grep -v '^\s*$' "$logs/$name-sync-each.log" | tail -1 | cut -c1-300)"
            echo "  $rmsg"
            py record "$records/$name-sync-each.json" kind=nf-sync-each "rerun_of=$name" rc:="$rrc" \
                "message=$rmsg" >/dev/null
            rm -rf "$dir-sync-each"
        fi
        write_results --quiet
    done
done

# --- 4. PyTorch backpropagation --------------------------------------------------------------
# nf trains on the images left after the 10% validation split and evaluates the validation and
# test splits (test: a fifth of N) in its end-to-end time; PyTorch does as many.
train_n=$((images - images / 10))
eval_n=$((images / 10 + (images + 4) / 5))
for budget_mib in 256 1024; do
    name="torch-bp-${budget_mib}MiB"
    if ! t=$(stage_limit 120 15); then
        log "$name: $t"
        py record "$records/$name.json" kind=torch budget_bytes:=$((budget_mib << 20)) "error=$t" >/dev/null
        continue
    fi
    log "$name: PyTorch VGG-11 (limit ${t}s)"
    smi_run "$logs/$name.smi" "$t" "$logs/$name.log" "$torch_python" "$bundle/gpu_check.py" torch \
        --budget $((budget_mib << 20)) --images "$train_n" --eval-images "$eval_n" \
        --out "$records/$name.json"
    tail -2 "$logs/$name.log" | cut -c1-200
    if [[ ! -f "$records/$name.json" ]]; then
        py record "$records/$name.json" kind=torch budget_bytes:=$((budget_mib << 20)) \
            "error=PyTorch run failed or timed out: $(tail -1 "$logs/$name.log" | cut -c1-200)" >/dev/null
    fi
    py record-add "$records/$name.json" smi_peak_bytes:="$(py smi-peak "$logs/$name.smi")" >/dev/null
    write_results --quiet
done

# --- 5. Results: logs.tgz, results.json and the table (the last thing on stdout) -------------
log "done in $((SECONDS - start))s; writing $out/logs.tgz, results.json, table.txt"
trap '' TERM INT
write_results
exit $?
