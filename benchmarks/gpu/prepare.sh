#!/usr/bin/env bash
# Gather into DIR everything benchmarks/gpu/check.sh needs on a bare GPU machine without network:
# pyopencl (and siphash24) wheels for each CPython in $GPU_CHECK_PYTHONS (default "3.12 3.11"),
# the pure-Python packages (pyopencl's, pytest, hypothesis, tqdm, setuptools to build with),
# pyvkfft's source, the OpenCL C headers, this package as a wheel, and its tests and benchmarks.
# numpy is not among them: check.sh uses the machine's own numpy 2, the one its scipy,
# scikit-image and matplotlib were installed with (a second numpy 2 over it could be newer than
# that scipy accepts). Run on a machine that reaches PyPI (and Debian's archive, for the
# headers, unless /usr/include/CL exists). DIR stays under 60 MiB.
#
#   bash benchmarks/gpu/prepare.sh DIR
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR=$(mkdir -p "$1" && cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
PYTHONS=${GPU_CHECK_PYTHONS:-"3.12 3.11"}
LIMIT_MIB=60
PIP=("$PY" -m pip --disable-pip-version-check -q)
mkdir -p "$DIR/wheels" "$DIR/sdist" "$DIR/include"

say() { echo "prepare: $*"; }
fail() { echo "prepare: FAILED at step '$1': $2" >&2; exit 1; }

say "binary wheels for CPython $PYTHONS (manylinux x86_64)"
for version in $PYTHONS; do
    tag=cp${version/./}
    "${PIP[@]}" download --dest "$DIR/wheels" --no-deps --only-binary=:all: \
        --implementation cp --python-version "$version" --abi "$tag" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 \
        "pyopencl>=2023.1" "siphash24>=1.6" \
        || fail "binary wheels" "pip download for CPython $version"
done

say "pure-Python packages"
# pyopencl: pytools, platformdirs, typing_extensions (not mako: only pyopencl's reduction, scan
# and sort templates need it, and gpu_deconv brings its own kernels); pytest and hypothesis for
# the tests. No pyclesperanto-prototype: it pins numpy<2, and no module of gpu_deconv imports it.
"${PIP[@]}" download --dest "$DIR/wheels" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation py --abi none --platform any \
    "pytools>=2024.1" "platformdirs>=2" "typing_extensions>=4" \
    "pytest>=7.4" "pluggy" "iniconfig" "packaging" "pygments" \
    "hypothesis>=6.80" "sortedcontainers" "attrs" "tqdm>=4.60" \
    "setuptools>=68" "wheel" "pip" \
    || fail "pure-Python packages" "pip download"

say "pyvkfft source (VkFFT builds on the target, against its OpenCL)"
work=$(mktemp -d)
"${PIP[@]}" download --dest "$work" --no-deps --no-binary=:all: "pyvkfft>=2024.1" \
    || fail "pyvkfft source" "pip download"
# Its example notebooks and pictures are 24 of its 26 MiB: the build needs neither.
tar -xzf "$work"/pyvkfft-*.tar.gz -C "$work"
source_dir=$(basename "$work"/pyvkfft-*.tar.gz .tar.gz)
rm -rf "$work/$source_dir/examples" "$work/$source_dir/doc" "$DIR"/sdist/pyvkfft-*
tar -czf "$DIR/sdist/$source_dir.tar.gz" -C "$work" "$source_dir"
rm -rf "$work"

say "OpenCL C headers"
if [ -f /usr/include/CL/cl.h ]; then
    cp -r /usr/include/CL "$DIR/include/"
else
    work=$(mktemp -d)
    (cd "$work" && apt-get download opencl-c-headers >/dev/null && dpkg-deb -x ./*.deb root) \
        || fail "OpenCL headers" "apt-get download opencl-c-headers"
    cp -r "$work/root/usr/include/CL" "$DIR/include/"
    rm -rf "$work"
fi

say "gpu_deconv wheel, tests and benchmarks"
"${PIP[@]}" wheel --no-deps --wheel-dir "$DIR/wheels" "$REPO" \
    || fail "gpu_deconv wheel" "pip wheel"
rm -rf "$DIR/source"
mkdir -p "$DIR/source"
(cd "$REPO" && git ls-files tests benchmarks pyproject.toml | tar -cf - -T -) \
    | tar -xf - -C "$DIR/source"

size=$(du -sm "$DIR" | cut -f1)
ls -1 "$DIR/wheels" "$DIR/sdist" > "$DIR/MANIFEST.txt"
say "DIR $DIR holds $size MiB ($(wc -l < "$DIR/MANIFEST.txt") entries, MANIFEST.txt)"
if [ "$size" -gt "$LIMIT_MIB" ]; then
    fail "size" "$size MiB is over the $LIMIT_MIB MiB limit"
fi
