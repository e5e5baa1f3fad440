"""Host-side planning shared by every backend.

Pure NumPy, run once per call: the boundary-mode index maps, the padded FFT geometry, the PSF
embedded for an OTF, the separability test, and the cost model behind ``method="auto"``.

Conventions (DESIGN.md section 2): the PSF origin is index ``n // 2`` on each axis, so

* ``convolve(x)[i] = sum_k h[k] x[i - k + n//2]``
* ``correlate(x)[i] = sum_k h[k] x[i + k - n//2]``

exactly as ``scipy.ndimage.convolve`` / ``correlate`` with ``origin=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ._base import BlurPlan, BlurSpec, MemoryNeed


def boundary_index(offsets: np.ndarray, size: int, boundary: str) -> np.ndarray:
    """Map integer positions (any, also far outside ``[0, size)``) to source indices.

    Follows ``scipy.ndimage``'s filter modes. ``"constant"`` has no source index (the value is
    zero) and is handled by the caller; asking for it raises ``ValueError``.

    Parameters
    ----------
    offsets : ndarray of int
        Positions relative to the start of the axis.
    size : int
        Length of the axis.
    boundary : {"reflect", "nearest", "mirror", "wrap"}
        Extension rule.

    Returns
    -------
    ndarray of int
        Indices in ``[0, size)``.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if boundary == "nearest":
        return np.clip(offsets, 0, size - 1)
    if boundary == "wrap":
        return np.mod(offsets, size)
    if boundary == "reflect":  # d c b a | a b c d | d c b a
        m = np.mod(offsets, 2 * size)
        return np.where(m < size, m, 2 * size - 1 - m)
    if boundary == "mirror":  # d c b | a b c d | c b a
        if size == 1:
            return np.zeros_like(offsets)
        m = np.mod(offsets, 2 * size - 2)
        return np.where(m < size, m, 2 * size - 2 - m)
    raise ValueError(f"boundary {boundary!r} has no index map")


def fast_length(n: int) -> int:
    """Smallest length >= ``n`` with only factors 2, 3 and 5 (fast for real FFTs)."""
    return int(scipy.fft.next_fast_len(int(n), real=True))


@dataclass(frozen=True)
class FFTGeometry:
    """Where an image sits inside the padded FFT domain.

    Attributes
    ----------
    shape : tuple of int
        Image shape.
    padded_shape : tuple of int
        FFT domain shape (FFT-friendly lengths).
    pad_before : tuple of int
        Offset of the image inside the padded domain on each axis.
    """

    shape: tuple[int, ...]
    padded_shape: tuple[int, ...]
    pad_before: tuple[int, ...]

    @property
    def crop(self) -> tuple[slice, ...]:
        """Slices that cut the image region out of the padded domain."""
        return tuple(slice(b, b + n) for b, n in zip(self.pad_before, self.shape))


def fft_geometry(shape: tuple[int, ...], psf_shape: tuple[int, ...], boundary: str) -> FFTGeometry:
    """Plan the padded domain so that a circular FFT convolution equals the boundary-mode one.

    Each axis gets ``n // 2`` leading samples of boundary extension and at least ``n // 2``
    trailing ones, then is rounded up to an FFT-friendly length; the circular wrap-around then
    only touches padding, for both the convolution and the correlation. ``"wrap"`` is already
    circular, so an axis whose length is FFT-friendly is left unpadded. ``"estimate"``: the
    padded domain is the estimate's work domain, ``n + k - 1`` rounded up, with the image
    ``k - 1 - k // 2`` voxels in (see :func:`~gpu_deconv.backends._base.full_margin`).
    """
    padded, before = [], []
    for n, k in zip(shape, psf_shape):
        if boundary == "estimate" and k > 1:
            # The estimate (image grown by the PSF's full reach) fills the domain: a circular
            # blur of that length never wraps the estimate onto the image (``n + k - 1``).
            padded.append(fast_length(n + k - 1))
            before.append(k - 1 - k // 2)
        elif k == 1 or (boundary == "wrap" and fast_length(n) == n):
            padded.append(n)
            before.append(0)
        else:
            padded.append(fast_length(n + 2 * (k // 2)))
            before.append(k // 2)
    return FFTGeometry(tuple(shape), tuple(padded), tuple(before))


def embed_psf(
    psf: np.ndarray, padded_shape: tuple[int, ...], dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """Place ``psf`` in a zero array of ``padded_shape`` with its origin (``n // 2``) at index 0.

    Offsets wrap around circularly, so a PSF longer than the domain (``"wrap"`` on an unpadded
    axis) folds onto it, as periodic extension demands. The real FFT of the result is the OTF:
    multiplying by it is ``convolve``, multiplying by its complex conjugate is ``correlate``.
    """
    kernel = np.zeros(padded_shape, dtype=dtype)
    index = [np.mod(np.arange(n) - n // 2, m) for n, m in zip(psf.shape, padded_shape)]
    np.add.at(kernel, np.ix_(*index), psf)
    return kernel


def exact_dct(
    psf: np.ndarray, shape: tuple[int, ...], boundary: str, dtype: np.dtype
) -> str | None:
    """Return the DCT that diagonalises this blur exactly, or ``None``.

    A PSF that is mirror-symmetric about its centre on every axis (odd lengths; Gaussians are)
    commutes with the symmetric extensions: ``"reflect"`` (half-sample symmetric, period 2N)
    is diagonalised by the DCT-II and ``"mirror"`` (whole-sample symmetric, period 2N-2) by the
    DCT-I, on the image itself with no padding, and then ``correlate == convolve``.

    Returns
    -------
    str or None
        ``"dct2"``, ``"dct1"`` or ``None``.
    """
    if boundary not in ("reflect", "mirror"):
        return None
    # The DCT-I needs two samples on every transformed axis (its period is 2N - 2).
    if boundary == "mirror" and any(n < 2 for n, k in zip(shape, psf.shape) if k > 1):
        return None
    if not is_symmetric(psf, float(16 * np.finfo(dtype).eps)):
        return None
    return "dct2" if boundary == "reflect" else "dct1"


def spectral_transform(
    psf: np.ndarray,
    shape: tuple[int, ...],
    boundary: str,
    dtype: np.dtype,
    cost_model: CostModel,
    transforms: tuple[str, ...] = ("rfft", "dct1", "dct2"),
) -> str:
    """Pick the transform for the ``"fft"`` method: an exact DCT or padded real FFTs.

    All are exact; the DCT needs no padding with ``"reflect"``/``"mirror"`` but is slower per
    sample on some devices (VkFFT's DCT on a CPU OpenCL device costs about two real FFTs), so
    the backend's cost model decides. With ``"nearest"`` and ``"constant"`` a symmetric PSF is
    also exact as a DCT-II of the image padded with that mode's values (``"dct2-padded"``):
    inside the image the kernel never reaches past the padding, and the DCT's own reflection
    beyond it only touches voxels that are cropped away. It needs two padded buffers where the
    real FFT needs five.

    Returns
    -------
    str
        ``"dct2"``, ``"dct1"`` (on the image), ``"dct2-padded"`` or ``"rfft"`` (on the padded
        domain of :func:`fft_geometry`).
    """
    candidates = ["rfft"]
    dct = exact_dct(psf, shape, boundary, dtype)
    if dct is not None and dct in transforms:
        candidates.append(dct)
    padded_dct = boundary in PADDED_DCT_BOUNDARIES and "dct2" in transforms
    if padded_dct and is_symmetric(psf, float(16 * np.finfo(dtype).eps)):
        candidates.append("dct2-padded")
    costs = {t: cost_model.fft_cost(shape, psf.shape, boundary, t) for t in candidates}
    # Ties go to the DCT: less memory.
    return min(reversed(candidates), key=costs.__getitem__)


# Modes where a symmetric PSF is exact as a DCT-II on the image padded with the mode's values.
PADDED_DCT_BOUNDARIES = ("nearest", "constant")


def is_symmetric(psf: np.ndarray, rtol: float) -> bool:
    """Whether ``psf`` has odd lengths and equals its own flip on every axis (to ``rtol``)."""
    if any(n % 2 == 0 for n in psf.shape):
        return False
    scale = np.abs(psf).max()
    return all(np.abs(psf - np.flip(psf, axis)).max() <= rtol * scale for axis in range(psf.ndim))


def dct_gain(
    psf: np.ndarray, shape: tuple[int, ...], dct_type: int, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """Eigenvalues of the symmetric blur in the DCT-I or DCT-II basis, C-contiguous ``dtype``.

    On an axis of length ``N`` the blur by a centred symmetric ``h`` multiplies DCT coefficient
    ``k`` by ``sum_j h[j] cos(pi k j / L)``, ``j`` running over offsets from the centre, with
    ``L = N`` for the DCT-II and ``L = N - 1`` for the DCT-I. Axes where the PSF has length 1
    are left out of the transform (the PSF only scales them): the result has length 1 there.
    Sums run in float64; the last axis is contracted one leading slab at a time into the
    result, so no full-size float64 array is made for a float32 gain.
    """

    def cosines(n_image: int, n_psf: int) -> np.ndarray:
        period = n_image if dct_type == 2 else n_image - 1
        offsets = np.arange(n_psf) - n_psf // 2
        return np.cos(np.pi * np.outer(np.arange(n_image), offsets) / period)

    gain = np.asarray(psf, np.float64)
    for axis, (n_image, n_psf) in enumerate(zip(shape[:-1], psf.shape[:-1])):
        if n_psf > 1:
            contracted = np.tensordot(cosines(n_image, n_psf), gain, axes=([1], [axis]))
            gain = np.moveaxis(contracted, 0, axis)
    if psf.shape[-1] == 1:
        return np.ascontiguousarray(gain, dtype=dtype)
    last = cosines(shape[-1], psf.shape[-1]).T
    out = np.empty((*gain.shape[:-1], shape[-1]), dtype)
    if gain.ndim == 1:
        out[...] = gain @ last
    for slab, target in zip(gain if gain.ndim > 1 else (), out):
        target[...] = slab @ last
    return out


def separable_profiles(psf: np.ndarray, rtol: float) -> list[np.ndarray] | None:
    """Return 1-D profiles whose outer product is ``psf``, or ``None`` if it is not rank one.

    The profiles are the marginal sums (each normalised to sum 1, the first carrying the total),
    and the PSF counts as separable when the relative Frobenius error of their outer product is
    at most ``rtol``.
    """
    total = psf.sum()
    profiles = []
    for axis in range(psf.ndim):
        other = tuple(a for a in range(psf.ndim) if a != axis)
        profiles.append(psf.sum(axis=other) / total if other else psf / total)
    profiles[0] = profiles[0] * total
    product = profiles[0]
    for profile in profiles[1:]:
        product = np.multiply.outer(product, profile)
    error = np.linalg.norm(product - psf) / np.linalg.norm(psf)
    return profiles if error <= rtol else None


def separability_rtol(dtype: np.dtype) -> float:
    """Rank-one tolerance: a few ulps of the compute dtype, so detection never costs accuracy."""
    return float(16 * np.finfo(dtype).eps)


@dataclass(frozen=True)
class CostModel:
    """Seconds-per-unit constants of one backend, for choosing a method.

    Attributes
    ----------
    spatial_per_mac : float
        Seconds per multiply-add of direct convolution.
    separable_per_mac : float
        Seconds per multiply-add of a 1-D pass.
    fft_per_nlogn : float
        Seconds per ``M log2 M`` of one forward plus one inverse real FFT of ``M`` samples.
    fft_per_sample : float
        Seconds per padded sample for padding, spectrum multiply and crop.
    call_overhead : float
        Fixed seconds per operator call (launches, planning look-ups).
    dct_factor : float
        Cost of a DCT relative to a real FFT of the same size.
    """

    spatial_per_mac: float
    separable_per_mac: float
    fft_per_nlogn: float
    fft_per_sample: float
    call_overhead: float
    dct_factor: float = 1.0

    def fft_cost(
        self, shape: tuple[int, ...], psf_shape: tuple[int, ...], boundary: str, transform: str
    ) -> float:
        """Estimated seconds of one convolution by the ``"fft"`` method with ``transform``."""
        if transform in ("rfft", "dct2-padded"):
            size = math.prod(fft_geometry(shape, psf_shape, boundary).padded_shape)
        else:
            size = math.prod(shape)
        factor = 1.0 if transform == "rfft" else self.dct_factor
        transforms = size * math.log2(max(size, 2)) * self.fft_per_nlogn * factor
        return transforms + size * self.fft_per_sample + self.call_overhead

    def costs(
        self,
        shape: tuple[int, ...],
        psf_shape: tuple[int, ...],
        separable: bool,
        boundary: str,
        transform: str,
    ) -> dict[str, float]:
        """Estimated seconds of one convolution by each applicable method."""
        n = math.prod(shape)
        costs = {
            "spatial": n * math.prod(psf_shape) * self.spatial_per_mac + self.call_overhead,
            "fft": self.fft_cost(shape, psf_shape, boundary, transform),
        }
        if separable:
            costs["separable"] = (
                n * sum(psf_shape) * self.separable_per_mac + len(psf_shape) * self.call_overhead
            )
        return costs


def choose_method(
    method: str,
    shape: tuple[int, ...],
    psf: np.ndarray,
    boundary: str,
    dtype: np.dtype,
    cost_model: CostModel,
    transforms: tuple[str, ...] = ("rfft", "dct1", "dct2"),
) -> tuple[str, list[np.ndarray] | None]:
    """Resolve ``method`` (``"auto"`` by the cost model) and return it with separable profiles.

    ``transforms`` are the backend's spectral transforms: without ``"rfft"`` there is no FFT
    method, and ``"auto"`` picks among the spatial ones.

    Raises
    ------
    ValueError
        If ``method="separable"`` is asked for a PSF that is not rank one, or a spatial method
        with ``boundary="estimate"``.
    """
    profiles = separable_profiles(psf, separability_rtol(dtype)) if psf.ndim > 1 else [psf]
    if boundary == "estimate":
        if method not in ("auto", "fft"):
            raise ValueError(
                f"boundary='estimate' runs with method='fft' (or 'auto'), not {method!r}: "
                "the linear blur of the larger estimate domain is computed by FFTs"
            )
        return "fft", profiles
    if method == "separable" and profiles is None:
        raise ValueError(
            "method='separable' needs a separable (rank-one) PSF, such as a Gaussian; "
            "use method='fft' or 'auto' for this PSF"
        )
    if method == "auto":
        transform = spectral_transform(psf, shape, boundary, dtype, cost_model, transforms)
        costs = cost_model.costs(shape, psf.shape, profiles is not None, boundary, transform)
        if "rfft" not in transforms:
            del costs["fft"]
        method = min(costs, key=costs.__getitem__)
    return method, profiles


def work_domain(
    shape: tuple[int, ...],
    psf_shape: tuple[int, ...],
    boundary: str,
    margin: tuple[tuple[int, int], ...],
) -> tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]:
    """Return the estimate's domain: its shape, the image's slices in it and the support's.

    Every mode but ``"estimate"`` keeps the image's own grid. ``"estimate"`` works on the
    padded FFT domain of :func:`fft_geometry`; the estimate may occupy the image grown by
    ``margin`` (before, after) per axis, and stays zero elsewhere.
    """
    if boundary != "estimate":
        whole = tuple(slice(0, n) for n in shape)
        return tuple(shape), whole, whole
    geometry = fft_geometry(shape, psf_shape, boundary)
    support = tuple(
        slice(b - lo, b + n + hi) for b, n, (lo, hi) in zip(geometry.pad_before, shape, margin)
    )
    return geometry.padded_shape, geometry.crop, support


def blur_plan(
    spec: BlurSpec,
    method: str,
    transform: str,
    memory: MemoryNeed,
    profiles: list[np.ndarray] | None,
) -> BlurPlan:
    """Return the :class:`BlurPlan` of ``spec`` with the backend's choices and operator memory.

    The work domain follows from the spec (:func:`work_domain`); only same-shape fft operators
    may write over their input.
    """
    work, observed, support = work_domain(spec.shape, spec.psf.shape, spec.boundary, spec.margin)
    inplace = method == "fft" and spec.boundary != "estimate"
    kept = profiles if method == "separable" else None
    return BlurPlan(method, transform, work, observed, support, inplace, memory, kept)
