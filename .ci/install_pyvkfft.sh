#!/usr/bin/env bash
# Install pyvkfft (VkFFT, the OpenCL FFT library) into the given Python's environment.
# pyvkfft has no wheels for OpenCL: it builds from source against the OpenCL headers and the
# ICD loader, and must be told VKFFT_BACKEND=opencl (else it tries to build for CUDA).
set -euo pipefail
PY=${1:-python3}
if "$PY" -c "import pyvkfft.opencl" 2>/dev/null; then
    exit 0
fi
if [ ! -f /usr/include/CL/cl.h ] || ! ldconfig -p | grep -q "libOpenCL.so "; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencl-headers ocl-icd-opencl-dev >/dev/null
    else
        echo "pyvkfft needs the OpenCL headers and loader: run as root" \
             "'apt-get install opencl-headers ocl-icd-opencl-dev' (or 'conda install ocl-icd'" \
             "and set CPATH/LIBRARY_PATH), then rerun make" >&2
        exit 1
    fi
fi
VKFFT_BACKEND=opencl "$PY" -m pip install --quiet "pyvkfft>=2024.1"
"$PY" -c "import pyvkfft.opencl"
