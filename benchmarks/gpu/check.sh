#!/usr/bin/env bash
# Check gpu_deconv on a bare GPU machine, from DIR (made by prepare.sh) alone, no network:
# install into a fresh virtual environment (over the machine's numpy 2, scipy and the rest),
# register the NVIDIA OpenCL library as an ICD in a private vendors folder, build pyvkfft, list
# the devices as `gpu-deconv devices` does (each one checked with a small kernel; the device to
# measure must pass), run the OpenCL tests on the GPU, then the GPU benchmark. Writes
# OUT/gpu_check.json and OUT/gpu_check.md (and OUT/logs/, OUT/devices.txt), says which step
# failed, and stops within 8 minutes.
#
#   bash check.sh DIR OUT [--allow-cpu]
#
# --allow-cpu: a CPU OpenCL device (PoCL) stands in for the GPU (rehearsal). Settings:
# PYTHON (default python3), GPU_CHECK_SIZES (default 256x256x256,512x1024x1024),
# GPU_CHECK_PSF (17), GPU_CHECK_ITERATIONS (10), GPU_CHECK_TESTS (pytest arguments),
# GPU_CHECK_ICD (an extra OpenCL library to register, e.g. PoCL's), GPU_CHECK_BUDGET (480 s),
# GPU_DECONV_DEVICE (the device to measure, as gpu_deconv takes it; by default its default).
set -uo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ] || { [ $# -eq 3 ] && [ "$3" != --allow-cpu ]; }; then
    echo "usage: $0 DIR OUT [--allow-cpu]" >&2
    exit 2
fi
DIR=$(cd "$1" && pwd) || { echo "check: no folder $1" >&2; exit 2; }
mkdir -p "$2" && OUT=$(cd "$2" && pwd)
ALLOW_CPU=$([ "${3:-}" = --allow-cpu ] && echo 1 || echo 0)
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-480}
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=$OUT/venv
VPY=$VENV/bin/python
rm -rf "$OUT/logs" "$OUT/steps.tsv" "$OUT/devices.json" "$OUT/devices.txt" "$OUT/bench.json" \
    "$OUT/tests_summary.txt"
mkdir -p "$OUT/logs"
: > "$OUT/steps.tsv"
trap '"$PY" "$HERE/report.py" "$OUT"; echo "check: report in $OUT/gpu_check.md"' EXIT

# step NAME SECONDS COMMAND...: run with a time limit (and within the whole budget), log it,
# record it; a failure ends the check, naming the step and its log (with KEEP_GOING=1 the
# check goes on to the next step and fails at the end).
FAILED=0
step() {
    local name=$1 limit=$2 start=$SECONDS left rc
    shift 2
    left=$((BUDGET - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -le 0 ]; then
        printf '%s\tfailed\t0\tno time left of the %s s budget\n' "$name" "$BUDGET" >> "$OUT/steps.tsv"
        echo "check: FAILED at step '$name': no time left" >&2
        exit 1
    fi
    echo "check: $name (at most $limit s)"
    timeout "$limit" bash -c '"$@"' _ "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    local detail
    detail=$(tail -n 1 "$OUT/logs/$name.log" | tr '\t|' '  ' | cut -c1-160)
    if [ $rc -ne 0 ]; then
        [ $rc -eq 124 ] && detail="timed out after $limit s; $detail"
        printf '%s\tfailed\t%s\t%s\n' "$name" $((SECONDS - start)) "$detail" >> "$OUT/steps.tsv"
        echo "check: FAILED at step '$name' (exit $rc): $detail; log: $OUT/logs/$name.log" >&2
        tail -n 20 "$OUT/logs/$name.log" >&2
        FAILED=1
        [ "${KEEP_GOING:-0}" = 1 ] && return 0
        exit 1
    fi
    printf '%s\tpassed\t%s\t%s\n' "$name" $((SECONDS - start)) "$detail" >> "$OUT/steps.tsv"
}

make_venv() {
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV"; then  # Debian without python3-venv's ensurepip: pip from DIR
        "$PY" -m venv --without-pip "$VENV" || return 1
        "$VPY" "$(ls "$DIR"/wheels/pip-*.whl | head -1)/pip" install -q --no-index \
            --find-links "$DIR/wheels" pip || return 1
    fi
    # The machine's own packages (numpy 2, scipy, scikit-image, tifffile, matplotlib, psutil)
    # stay visible, after the environment's own (which hold no numpy: the machine's numpy 2 is
    # the one its scipy and the rest were installed with).
    local site
    site=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    "$PY" -c "import site; print('\n'.join(site.getsitepackages()))" > "$site/_gpu_check_base.pth"
    "$VPY" -c "import sys; print(sys.version)"
}

install_packages() {
    "$VPY" -m pip install -q --no-index --find-links "$DIR/wheels" --no-deps --ignore-installed \
        pyopencl siphash24 pytools platformdirs typing_extensions pytest pluggy iniconfig \
        packaging pygments hypothesis sortedcontainers attrs tqdm setuptools wheel gpu_deconv \
        || return 1
    "$VPY" - <<'PY'
import importlib
missing = []
for name in ("numpy", "scipy", "skimage", "tifffile", "matplotlib", "psutil", "pyopencl",
             "pytest", "hypothesis", "gpu_deconv"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report every missing piece at once
        missing.append(f"{name}: {exc}")
import numpy
assert not missing, "cannot import " + "; ".join(missing)
major = int(numpy.__version__.split(".")[0])
assert major >= 2, f"the machine's numpy is {numpy.__version__} ({numpy.__file__}), need numpy 2"
print("imports fine; numpy", numpy.__version__, "from", numpy.__file__)
PY
}

icd_library() {
    # The file an ICD line loads: a path, or a bare name in the usual library folders.
    local dir
    case $1 in
        /*) readlink -f "$1" ;;
        *) for dir in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/lib /usr/lib; do
               [ -e "$dir/$1" ] && { readlink -f "$dir/$1"; return; }
           done
           echo "$1" ;;
    esac
}

register_icds() {
    # A private vendors folder: the driver's own registrations, the NVIDIA library wherever
    # the driver put it, and with --allow-cpu or GPU_CHECK_ICD a CPU stand-in; a library that
    # is registered already is not registered twice (it would list its devices twice).
    local icd=$OUT/icd lib
    rm -rf "$icd" && mkdir -p "$icd"
    cp /etc/OpenCL/vendors/*.icd "$icd/" 2>/dev/null
    add_icd() {  # add_icd NAME LIBRARY
        local f target
        target=$(icd_library "$2")
        for f in "$icd"/*.icd; do
            if [ -e "$f" ] && [ "$(icd_library "$(head -n 1 "$f")")" = "$target" ]; then
                echo "$2: registered already by $(basename "$f")"
                return 0
            fi
        done
        echo "$2" > "$icd/$1"
    }
    for lib in $(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so/ {print $NF}') \
        /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 /usr/lib64/libnvidia-opencl.so.1 \
        /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib/libnvidia-opencl.so.1; do
        if [ -e "$lib" ]; then
            add_icd nvidia.icd "$lib"
            break
        fi
    done
    if [ -n "${GPU_CHECK_ICD:-}" ]; then
        add_icd extra.icd "$GPU_CHECK_ICD"
    elif [ "$ALLOW_CPU" = 1 ]; then
        lib=$(ls /usr/lib/x86_64-linux-gnu/libpocl.so.* "$("$PY" -c 'import site; print(site.getsitepackages()[0])')"/pyopencl/.libs/libpocl*.so 2>/dev/null | head -1)
        [ -n "$lib" ] && add_icd pocl.icd "$lib"
    fi
    ls "$icd"/*.icd >/dev/null 2>&1 || { echo "no OpenCL library found to register"; return 1; }
    for f in "$icd"/*.icd; do echo "$(basename "$f"): $(cat "$f")"; done
}

build_pyvkfft() {
    # Linked against pyopencl's own ICD loader (so it needs none on the machine).
    local libs=$OUT/lib loader
    loader=$("$VPY" -c "import pyopencl, glob, os; print(glob.glob(os.path.join(os.path.dirname(pyopencl.__file__), '.libs', 'libOpenCL*'))[0])") || return 1
    rm -rf "$libs" && mkdir -p "$libs" && ln -s "$loader" "$libs/libOpenCL.so"
    VKFFT_BACKEND=opencl CPATH="$DIR/include" LIBRARY_PATH="$libs" \
        LDFLAGS="-Wl,-rpath,$(dirname "$loader")" \
        "$VPY" -m pip install --no-index --find-links "$DIR/wheels" --no-build-isolation \
        --no-deps "$DIR"/sdist/pyvkfft-*.tar.gz || return 1
    "$VPY" -c "import importlib.metadata, pyvkfft.opencl; print('pyvkfft', importlib.metadata.version('pyvkfft'))"
}

list_devices() {
    # The list as `gpu-deconv devices` prints it (each device checked with a small kernel,
    # UNUSABLE with the driver's reason when it fails), then the device the calibration, the
    # tests and the benchmark will use (gpu_deconv's default, or $GPU_DECONV_DEVICE): it must
    # have passed its check, and be a GPU unless --allow-cpu.
    local rc
    "$VENV/bin/gpu-deconv" devices > "$OUT/devices.txt" 2>&1
    rc=$?
    cat "$OUT/devices.txt"
    "$VPY" - "$OUT/devices.json" "$ALLOW_CPU" <<'PY' || return 1
import dataclasses, json, os, sys
import gpu_deconv as gd
devices = gd.list_devices()
json.dump([dataclasses.asdict(d) for d in devices], open(sys.argv[1], "w"), indent=1)


def named(d):
    return f"{d.name!r} [{d.type}] on {d.platform} (driver {d.driver})"


unusable = [d for d in devices if not d.usable]
for d in unusable:
    print(f"UNUSABLE {named(d)}: {d.problem}")
if not devices:
    sys.exit("no OpenCL device found (see the opencl-icd step for what was registered)")
selector = os.environ.get("GPU_DECONV_DEVICE")
chosen = [d for d in devices if d.is_default]
if not chosen:  # the device $GPU_DECONV_DEVICE names, or every device, failed its check
    try:
        gd.get_backend("opencl")
        reason = "gpu_deconv chooses no device"
    except gd.BackendUnavailableError as exc:
        reason = " ".join(str(exc).split())
    print(reason)
    broken = [d for d in unusable if repr(d.name) in reason]
    if not broken:
        sys.exit(f"no device to measure: {reason}")
    which = f"GPU_DECONV_DEVICE={selector!r}" if selector else "every device failed its check"
    sys.exit(f"the device to measure ({which}) is UNUSABLE: {broken[0].problem} "
             f"({named(broken[0])})")
measured = chosen[0]
if measured.type != "GPU" and sys.argv[2] != "1":
    broken = [d for d in devices if d.type == "GPU" and not d.usable]
    if broken:
        sys.exit(f"the GPU is UNUSABLE: {broken[0].problem} ({named(broken[0])})")
    reason = f"GPU_DECONV_DEVICE={selector!r} selects" if selector else "gpu_deconv's default is"
    sys.exit(f"no GPU to measure: {reason} {named(measured)} (--allow-cpu rehearses on a CPU)")
print(f"{len(devices)} devices ({len(unusable)} unusable); measuring {named(measured)}")
PY
    [ "$rc" -eq 0 ] || echo "gpu-deconv devices exited $rc"
    return "$rc"
}

run_tests() {
    rm -rf "$OUT/source" && cp -r "$DIR/source" "$OUT/source" && cd "$OUT/source" || return 1
    # Every OpenCL test but those needing dask, SimpleITK or zarr (not on the machine); on a
    # CPU stand-in, whose cold kernel cache makes every VkFFT plan take seconds, a subset.
    local selection="tests --ignore=tests/test_dask.py --ignore=tests/test_peers.py"
    selection="$selection --ignore=tests/test_scaling.py"
    [ "$ALLOW_CPU" = 1 ] && selection="tests/test_devices.py tests/test_kernels.py"
    # shellcheck disable=SC2086
    GPU_DECONV_REQUIRE_OPENCL=1 "$VPY" -m pytest -p no:cacheprovider -q -m opencl -k "not dask" \
        ${GPU_CHECK_TESTS:-$selection}
    local rc=$?
    tail -n 1 "$OUT/logs/tests.log" > "$OUT/tests_summary.txt" 2>/dev/null
    return $rc
}

export DIR OUT ALLOW_CPU PY HERE VENV VPY
export -f make_venv install_packages icd_library register_icds build_pyvkfft list_devices \
    run_tests
step venv 60 make_venv
step install 120 install_packages
step opencl-icd 10 register_icds
export OCL_ICD_VENDORS=$OUT/icd
step pyvkfft 180 build_pyvkfft
step devices 60 list_devices
sed 's/^/  /' "$OUT/devices.txt"
# The device's measured cost model (OUT/calibration/calibration.json): method="auto" in the
# benchmark plans with it, and its constants can go into the package.
export GPU_DECONV_CACHE_DIR=$OUT/calibration
KEEP_GOING=1 step calibrate 90 "$VPY" -m gpu_deconv.cli calibrate
# Failing tests still leave the benchmark its time (its figures are what the check is for).
KEEP_GOING=1 step tests 200 run_tests
left=$((BUDGET - SECONDS - 15))
step benchmark "$left" "$VPY" "$DIR/source/benchmarks/gpu/bench.py" \
    --sizes "${GPU_CHECK_SIZES:-256x256x256,512x1024x1024}" --psf "${GPU_CHECK_PSF:-17}" \
    --iterations "${GPU_CHECK_ITERATIONS:-10}" --deadline $((left / 2)) --out "$OUT/bench.json"
if [ "$FAILED" = 1 ]; then
    echo "check: FAILED (see the steps above) after $SECONDS s" >&2
    exit 1
fi
echo "check: all steps passed in $SECONDS s"
