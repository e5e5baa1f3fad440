#!/usr/bin/env bash
# Install an OpenCL runtime and pyvkfft (VkFFT, the OpenCL FFT library) for the given Python.
#
# 1. The OpenCL headers and ICD loader (pyvkfft builds against them) and the distribution's PoCL,
#    a CPU device whose compiler picks the CPU's variant at run time: as root, with apt-get.
#    PoCL 3.0 from PyPI (pocl-binary-distribution, LLVM 14) cannot compile for CPUs newer than
#    2022 (AMD Zen 5: "unknown target CPU 'generic'"), so it is installed only as the fallback
#    where no system OpenCL driver exists; gpu_deconv checks every device before using it.
#    Without root: conda-forge's `pocl` and `ocl-icd` (`conda install -c conda-forge pocl
#    ocl-icd`), with CPATH/LIBRARY_PATH set to the environment's include/ and lib/.
# 2. pyvkfft, which has no OpenCL wheels: it builds from source, told VKFFT_BACKEND=opencl (else
#    it tries to build for CUDA). pip caches the built wheel, so a second environment reuses it.
set -euo pipefail
PY=${1:-python3}
PACKAGES="opencl-headers ocl-icd-opencl-dev pocl-opencl-icd"

# Without root only a warning: conda's pocl and ocl-icd can stand in (see above).
bash "$(dirname "$0")/apt_install.sh" "the OpenCL headers, loader and CPU driver" $PACKAGES \
    || echo "install_opencl: without root use conda-forge's pocl and ocl-icd" >&2

if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
    echo "install_opencl: no system OpenCL driver; installing PyPI's PoCL 3.0 as the fallback" \
         "(gpu_deconv checks that it can compile on this CPU before using it)" >&2
    "$PY" -m pip install --quiet "pocl-binary-distribution>=3.0"
fi

if "$PY" -c "import pyvkfft.opencl" 2>/dev/null; then
    exit 0
fi
if [ ! -f /usr/include/CL/cl.h ] && [ -z "${CPATH:-}" ]; then
    echo "pyvkfft needs the OpenCL headers and loader: run as root" \
         "'apt-get install opencl-headers ocl-icd-opencl-dev' (or 'conda install ocl-icd'" \
         "and set CPATH/LIBRARY_PATH), then rerun make" >&2
    exit 1
fi
VKFFT_BACKEND=opencl "$PY" -m pip install --quiet "pyvkfft>=2024.1"
"$PY" -c "import pyvkfft.opencl"
