#!/usr/bin/env bash
# The test command of NeuroFlux: sets up what the tests need, then runs every check and test.
#
#   bash scripts/test.sh
#
# Works on a fresh Debian machine with rustup: it adds the microcontroller target and the
# rustfmt/clippy components, installs the apt packages the tests need (only those missing),
# cbindgen (cargo install, once) and a Python venv with numpy and onnxruntime (target/pyenv, for
# the ONNX export test), then runs, in order: rustfmt, the import-circle check, clippy, the C ABI crate's checks
# (tests/firmware-c/capi: fmt, clippy, unit tests, the cbindgen header up to date), the nf-core
# cross-build for thumbv7em-none-eabihf, the check that nf-core uses neither std nor alloc and
# depends only on heapless/libm/micromath, `cargo test --workspace`, the MPI tests
# (`cargo test -p nf-host --features mpi --test mpi`, under a real mpirun) and `cargo install
# --path nf-host` into a scratch root. Any failure stops the
# run with a non-zero exit status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MCU_TARGET=thumbv7em-none-eabihf
APT_PACKAGES=(
    dataset-fashion-mnist   # the full Fashion-MNIST, /usr/share/datasets/fashion-mnist
    qemu-system-arm         # runs the firmware build of nf-core on an emulated Cortex-M
    gcc-arm-none-eabi       # builds the C firmware over nf-core's C ABI (tests/firmware-c)
    libnewlib-arm-none-eabi # its C library (stdio over semihosting: rdimon.specs)
    make                    # builds tests/firmware-c (its Makefile)
    chromium                # renders the HTML of `nf report` in the browser test
    chromium-driver         # drives it (console errors, screenshots) for that test
    libopenmpi-dev          # nf-host's `mpi` feature (rsmpi) links Open MPI
    openmpi-bin             # mpirun, which the MPI tests (nf-host/tests/mpi.rs) run nf under
    libclang-dev            # rsmpi generates its MPI bindings with bindgen
)

stage_started=$SECONDS
stage() {
    if [[ -n "${stage_name:-}" ]]; then
        echo "--- ${stage_name}: ok ($((SECONDS - stage_started)) s)"
    fi
    stage_name=$1
    stage_started=$SECONDS
    echo
    echo "=== $1"
}

# --- Set-up --------------------------------------------------------------------------------------

stage "toolchain: rustup target ${MCU_TARGET}, rustfmt, clippy"
if [[ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
fi
if ! command -v rustup >/dev/null; then
    echo "error: rustup not found; install it from https://rustup.rs and run this again" >&2
    exit 1
fi
rustup target add "${MCU_TARGET}"
rustup component add rustfmt clippy
cargo --version

stage "apt packages: ${APT_PACKAGES[*]}"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        echo "already installed: $pkg"
    else
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "error: apt-get not found; install these packages by hand: ${missing[*]}" >&2
        exit 1
    fi
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        sudo=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt/dpkg to finish instead of failing, retry downloads, and retry the
    # whole step: mirrors can be slow or briefly unreachable.
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=5 -o Dpkg::Use-Pty=0)
    installed=0
    for attempt in 1 2 3; do
        echo "installing (attempt ${attempt}): ${missing[*]}"
        if "${sudo[@]}" apt-get "${apt_opts[@]}" update -q &&
            "${sudo[@]}" apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}"; then
            installed=1
            break
        fi
        sleep $((attempt * 15))
    done
    if ((!installed)); then
        echo "error: could not install: ${missing[*]}" >&2
        exit 1
    fi
fi

stage "cbindgen (generates and checks tests/firmware-c/include/neuroflux.h)"
if command -v cbindgen >/dev/null && cbindgen --version; then
    echo "already installed: $(command -v cbindgen)"
else
    installed=0
    for attempt in 1 2 3; do
        if cargo install cbindgen --locked; then
            installed=1
            break
        fi
        sleep $((attempt * 10))
    done
    if ((!installed)); then
        echo "error: could not install cbindgen (cargo install cbindgen --locked)" >&2
        exit 1
    fi
fi

stage "pip wheel: nvidia-cuda-nvrtc 13.0 (NVRTC for nf-cuda's kernel compile test)"
# Installed outside the repository; the library directory is exported for the tests.
NVRTC_HOME="${NF_NVRTC_HOME:-$HOME/.cache/nf-nvrtc}"
NVRTC_LIB="$NVRTC_HOME/nvidia/cu13/lib"
if [[ -e "$NVRTC_LIB/libnvrtc.so.13" ]]; then
    echo "already installed: $NVRTC_LIB/libnvrtc.so.13"
else
    if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
        echo "error: python3 -m pip not found; it installs nvidia-cuda-nvrtc for the NVRTC test" >&2
        exit 1
    fi
    installed=0
    for attempt in 1 2 3; do
        if PIP_ROOT_USER_ACTION=ignore timeout 300 python3 -m pip install --quiet --disable-pip-version-check \
            --no-input --retries 2 --timeout 30 --upgrade --target "$NVRTC_HOME" 'nvidia-cuda-nvrtc>=13.0,<13.1'; then
            installed=1
            break
        fi
        sleep $((attempt * 10))
    done
    if ((!installed)) || [[ ! -e "$NVRTC_LIB/libnvrtc.so.13" ]]; then
        echo "error: could not install nvidia-cuda-nvrtc (the NVRTC compile test needs it)" >&2
        exit 1
    fi
fi
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NF_NVRTC_DIR="$NVRTC_LIB"
echo "NVRTC: $NVRTC_LIB"

stage "Python venv for the ONNX export test: numpy, onnxruntime (target/pyenv)"
# `nf export --onnx` is checked by running the exported files in onnxruntime
# (nf-host/tests/export.rs runs scripts/onnx_check.py with this interpreter).
PYENV="${NF_PYENV:-target/pyenv}"
PY_PACKAGES=('numpy>=1.24,<3' 'onnxruntime>=1.17,<2')
if "$PYENV/bin/python3" -c 'import numpy, onnxruntime' 2>/dev/null; then
    echo "already installed: $PYENV (numpy, onnxruntime)"
else
    if ! python3 -m venv --clear "$PYENV"; then
        # Debian's python3 needs python3-venv for `-m venv`.
        echo "installing python3-venv"
        sudo=()
        if [[ $(id -u) != 0 ]]; then
            sudo=(sudo -n)
        fi
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q &&
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 \
                install -y -q --no-install-recommends python3-venv
        python3 -m venv --clear "$PYENV"
    fi
    installed=0
    for attempt in 1 2 3; do
        if PIP_ROOT_USER_ACTION=ignore timeout 600 "$PYENV/bin/python3" -m pip install --quiet \
            --disable-pip-version-check --no-input --retries 2 --timeout 30 "${PY_PACKAGES[@]}"; then
            installed=1
            break
        fi
        sleep $((attempt * 10))
    done
    if ((!installed)) || ! "$PYENV/bin/python3" -c 'import numpy, onnxruntime'; then
        echo "error: could not install ${PY_PACKAGES[*]} into $PYENV (the ONNX export test needs them)" >&2
        exit 1
    fi
fi
NF_ONNX_PYTHON="$(cd "$PYENV/bin" && pwd)/python3"
export NF_ONNX_PYTHON
echo "ONNX check Python: $NF_ONNX_PYTHON ($("$NF_ONNX_PYTHON" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)'))"
# Everything installed above must be used: a test that would skip for a missing tool or data
# set (firmware under QEMU, the C ABI and the C firmware, NVRTC, the full Fashion-MNIST, the
# browser check of `nf report`, onnxruntime for `nf export`) fails instead.
export NF_REQUIRE_TOOLS=1

# --- Checks --------------------------------------------------------------------------------------

stage "cargo fmt --all -- --check"
cargo fmt --all -- --check

stage "import circles (scripts/circles.py: its planted circle, then every crate)"
python3 scripts/circles.py --self-test
python3 scripts/circles.py

stage "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

stage "cargo clippy -p nf-host --features mpi --all-targets -- -D warnings"
cargo clippy -p nf-host --features mpi --all-targets -- -D warnings

# NCCL (GPUs): cudarc loads libnccl at run time, so these build and lint without a GPU or NCCL.
stage "cargo clippy -p nf-cuda --features nccl --all-targets -- -D warnings"
cargo clippy -p nf-cuda --features nccl --all-targets -- -D warnings
stage "cargo clippy -p nf-host --features nccl --all-targets -- -D warnings"
cargo clippy -p nf-host --features nccl --all-targets -- -D warnings

stage "cargo doc --no-deps --workspace (RUSTDOCFLAGS=-D warnings: every doc link resolves)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

stage "firmware crate (tests/firmware): cargo fmt --check, cargo clippy"
(cd tests/firmware && cargo fmt -- --check && cargo clippy --release --target "${MCU_TARGET}" -- -D warnings)

stage "C ABI crate (tests/firmware-c/capi): cargo fmt --check, clippy (host and ${MCU_TARGET}), unit tests, header up to date"
# Its own workspace, like tests/firmware; its target directory is tests/firmware-c/target.
(cd tests/firmware-c/capi && cargo fmt -- --check &&
    cargo clippy --release --all-targets --target-dir ../target -- -D warnings &&
    cargo clippy --release --features small --target "${MCU_TARGET}" --target-dir ../target -- -D warnings &&
    cargo test --release --features small --target-dir ../target &&
    cbindgen --quiet --config cbindgen.toml --output ../include/neuroflux.h --verify)

stage "nf-core cross-build: cargo build -p nf-core --target ${MCU_TARGET} --release"
# The target has no std: any use of std outside #[cfg(test)] code fails this build.
cargo build -p nf-core --target "${MCU_TARGET}" --release

stage "nf-core is no_std and allocator-free"
failed=0
if ! grep -Eq '^#!\[(cfg_attr\(not\(test\), *)?no_std\)?\]' nf-core/src/lib.rs; then
    echo "error: nf-core/src/lib.rs does not declare #![no_std]" >&2
    failed=1
fi
# A no_std crate can only reach alloc through `extern crate alloc` (and the target build above
# cannot catch it: alloc exists for ${MCU_TARGET}).
if grep -rn --include='*.rs' -E '^\s*(pub\s+)?extern\s+crate\s+alloc\b' nf-core/src; then
    echo "error: nf-core uses alloc (lines above)" >&2
    failed=1
fi
# Normal (non-dev, non-build) direct dependencies may only be heapless, libm and micromath.
# `--target all` also lists platform-specific dependencies.
deps=$(cargo tree -p nf-core -e normal --depth 1 --prefix none --target all |
    awk 'NF && $1 != "nf-core" { print $1 }' | sort -u | tr '\n' ' ')
echo "nf-core dependencies: ${deps}"
for dep in ${deps}; do
    case "$dep" in
    heapless | libm | micromath) ;;
    *)
        echo "error: nf-core depends on '${dep}'; only heapless, libm and micromath are allowed" >&2
        failed=1
        ;;
    esac
done
if ((failed)); then
    exit 1
fi

# --- Tests ---------------------------------------------------------------------------------------

stage "cargo test --workspace"
cargo test --workspace

# Data-parallel training under a real mpirun (the feature is off in the workspace build; these
# tests fail, not skip, without mpirun).
stage "cargo test -p nf-host --features mpi --test mpi"
cargo test -p nf-host --features mpi --test mpi

# What of NCCL runs without a GPU: a missing libnccl is refused in one line, never a panic (the
# NCCL smoke run on a GPU is the GPU check's: scripts/gpu-check.sh).
stage "cargo test -p nf-cuda --features nccl --lib nccl"
cargo test -p nf-cuda --features nccl --lib nccl

stage "cargo install --path nf-host (the README's way onto the PATH, into a scratch root)"
install_root=$(mktemp -d)
# --debug and the workspace's target directory reuse the test build: this checks the install,
# not the optimiser.
cargo install --locked --debug --path nf-host --root "${install_root}" --target-dir target
"${install_root}/bin/nf" --version
"${install_root}/bin/nf" plan --budget 32MiB >/dev/null
rm -rf "${install_root}"

echo "--- ${stage_name}: ok ($((SECONDS - stage_started)) s)"
echo
echo "all checks and tests passed (${SECONDS} s)"
