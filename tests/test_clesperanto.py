"""The tutorial's clesperanto flow with no host round trip: push, deconvolve, threshold, pull.

Runs where pyclesperanto-prototype is installed: CI's clesperanto environment
(`make test-clesperanto`; it pins numpy<2, so the main environment goes without it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest import rel_rms, require_backend

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf

cle = pytest.importorskip("pyclesperanto_prototype")
pytestmark = pytest.mark.opencl


def test_push_deconvolve_threshold_pull_stays_on_the_device(monkeypatch):
    require_backend("opencl")
    import pyopencl as cl

    rng = np.random.default_rng(7)
    truth = np.zeros((24, 64, 64))
    truth[tuple(rng.integers(4, n - 4, 30) for n in truth.shape)] = 4000.0
    image = rng.poisson(ndi.gaussian_filter(truth, (2.0, 1.5, 1.5)) + 5).astype(np.float32)
    psf = gaussian_psf((9, 11, 11), (2.0, 1.5, 1.5))
    expected = gd.richardson_lucy(image, psf, 20, backend="numpy", dtype="float32")

    pushed = cle.push(image)
    pulled = {"bytes": 0}
    real = cl.enqueue_copy

    def counting(queue, dest, src, **kwargs):
        if isinstance(dest, np.ndarray) and not isinstance(src, np.ndarray):
            pulled["bytes"] += dest.nbytes
        return real(queue, dest, src, **kwargs)

    monkeypatch.setattr(cl, "enqueue_copy", counting)
    result = gd.richardson_lucy(pushed, psf, 20)
    monkeypatch.setattr(cl, "enqueue_copy", real)
    assert pulled["bytes"] < 0.01 * image.nbytes
    assert type(result) is type(pushed) and result.queue == pushed.queue
    assert rel_rms(cle.pull(result), expected) < 1e-5
    # clesperanto takes the result as its own image.
    binary = cle.pull(cle.threshold_otsu(result))
    assert binary.shape == image.shape and 0 < binary.sum() < binary.size


# clesperanto's own labelling kernels build with compiler remarks on PoCL: not ours.
@pytest.mark.filterwarnings("ignore:Non-empty compiler output")
def test_the_readme_clesperanto_example_runs():
    require_backend("opencl")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "cle.push" in b]
    assert len(blocks) == 1
    namespace: dict = {"__name__": "__main__"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["result"].shape == (70, 70) and namespace["result"].max() >= 1
