r"""Direct deconvolution filters: :func:`wiener` and :func:`tikhonov`.

One pass, no iterations: the image's spectrum is divided by the blur's, with a regulariser
that keeps frequencies the blur has all but erased from blowing up. The spectrum is taken on
the domain where the blur under ``boundary`` is diagonal (see
:mod:`gpu_deconv.backends._filter_planning`): the image itself for ``"wrap"``, its even
extension for ``"reflect"``/``"mirror"`` (a DCT of the image when the PSF is symmetric), the
image padded with the mode's values for ``"nearest"``/``"constant"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _device_io as dio
from . import _scaling, tiling
from . import _validation as v
from .backends import Backend, get_backend
from .backends._base import BlurSpec, FilterSpec, MemoryNeed


def tikhonov(
    image: np.ndarray,
    psf: np.ndarray,
    regularization: float,
    *,
    regularizer: str = "identity",
    backend: str | Backend = "auto",
    boundary: str = "reflect",
    normalize_psf: bool = True,
    dtype: Any = None,
    device: str | None = None,
    tile_shape: str | Sequence[int] | None = "auto",
    overlap: int | Sequence[int] | None = None,
    max_memory: int | None = None,
) -> np.ndarray:
    r"""Deconvolve by Tikhonov-regularised least squares, in one pass.

    Parameters
    ----------
    image : (M, N[, P]) array_like
        Observed image, 1D, 2D or 3D, real and finite; negative values are kept (the filter
        is linear).
    psf : array_like
        Non-negative point spread function with the image's ndim, origin at ``n // 2``.
    regularization : float
        The penalty's weight :math:`\lambda > 0`, against :math:`|L|^2` (which is 1 at zero
        frequency for a normalised PSF); independent of the image's scale. SimpleITK's
        ``RegularizationConstant``.
    regularizer : {"identity", "laplacian"}, optional
        :math:`R` in the penalty :math:`\lambda \|R f\|^2`: the identity (by default;
        SimpleITK's) or the discrete Laplacian (scikit-image's).
    backend : {"auto", "numpy", "opencl"} or Backend, optional
        Compute backend, by default ``"auto"``.
    boundary : {"reflect", "nearest", "mirror", "wrap", "constant"}, optional
        Edge handling, by default ``"reflect"`` (see the module docstring for the domain each
        mode implies). ``"estimate"`` has no closed form and raises.
    normalize_psf : bool, optional
        Scale the PSF to sum 1 first, by default True.
    dtype : {None, "float32", "float64"}, optional
        Compute and output dtype; by default float64 for float64 images where the backend has
        it, else float32.
    device : str, optional
        OpenCL device name substring (see :func:`gpu_deconv.list_devices`).
    tile_shape, overlap, max_memory
        As in :func:`gpu_deconv.richardson_lucy`: filter in overlapping tiles when the image
        does not fit (``"auto"``, the default), in tiles of at most ``tile_shape`` voxels, or
        never (``None``). The default overlap (10 RMS widths of the PSF) kept tiles within
        1.4e-5 (``regularization=1e-2``) to 5.4e-4 (``1e-4``) relative RMS of the whole
        image (docs/guide/direct-filters.md): the weaker the regularisation, the wider the
        filter's impulse response.

    Returns
    -------
    ndarray
        The estimate, with the image's shape and ``dtype``. It may hold negative values
        (the filter is linear); clip them if you need a non-negative image.

    Raises
    ------
    TypeError
        If an array has a non-numeric or complex dtype or is a masked array.
    ValueError
        If an array is empty, holds NaN or inf, the PSF is negative, all zero or of another
        ndim; a name is unknown; ``regularization`` is not a positive finite number, or is
        below the compute dtype's resolution (``numpy.finfo(dtype).eps`` times the PSF's
        squared sum: 1.2e-7 in float32); ``boundary="estimate"``; or the result leaves the
        dtype's range.
    BackendUnavailableError
        If the requested backend cannot run on this machine.
    MemoryError
        If one piece needs more memory than ``max_memory`` or the backend offers.

    Notes
    -----
    The estimate minimises :math:`\|H f - g\|^2 + \lambda \|R f\|^2` on the filter's domain:

    .. math:: \hat f = \mathcal{T}^{-1}\left[\frac{\overline{L}}{|L|^2 + \lambda |r|^2}
              \,\mathcal{T} g\right]

    with :math:`L` and :math:`r` the eigenvalues of the blur and of :math:`R` in the
    transform :math:`\mathcal{T}` that diagonalises them. With ``"wrap"``, and with
    ``"reflect"`` and a mirror-symmetric PSF, this is exactly the minimiser for
    :math:`H f` = ``scipy.ndimage.convolve(f, psf, mode=boundary)``.

    Examples
    --------
    >>> import numpy as np
    >>> import gpu_deconv as gd
    >>> from gpu_deconv.psf import gaussian_psf
    >>> scene = np.zeros((32, 32)); scene[16, 16] = 1.0
    >>> psf = gaussian_psf((9, 9), sigma=1.5)
    >>> blurred = gd.convolve(scene, psf, backend="numpy")
    >>> restored = gd.tikhonov(blurred, psf, 1e-4, backend="numpy")
    >>> bool(restored[16, 16] > 2 * blurred[16, 16])
    True
    """
    regularization = v.check_positive(regularization, "regularization")
    regularizer = v.check_regularizer(regularizer)
    return _filter(
        image,
        psf,
        regularizer,
        regularization,
        None,
        backend=backend,
        boundary=boundary,
        normalize_psf=normalize_psf,
        dtype=dtype,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        max_memory=max_memory,
    )


def wiener(
    image: np.ndarray,
    psf: np.ndarray,
    balance: float | None = None,
    *,
    noise_variance: float | None = None,
    regularizer: str | None = None,
    backend: str | Backend = "auto",
    boundary: str = "reflect",
    normalize_psf: bool = True,
    dtype: Any = None,
    device: str | None = None,
    tile_shape: str | Sequence[int] | None = "auto",
    overlap: int | Sequence[int] | None = None,
    max_memory: int | None = None,
) -> np.ndarray:
    r"""Deconvolve with a Wiener filter, in one pass.

    Give exactly one of ``balance`` (a constant noise-to-signal ratio, scikit-image's
    ``restoration.wiener``) or ``noise_variance`` (the signal's power estimated from the data,
    SimpleITK's ``WienerDeconvolution``).

    Parameters
    ----------
    image : (M, N[, P]) array_like
        Observed image, 1D, 2D or 3D, real and finite; negative values are kept.
    psf : array_like
        Non-negative point spread function with the image's ndim, origin at ``n // 2``.
    balance : float, optional
        Noise-to-signal ratio relative to the regulariser's power (``> 0``): the filter is
        :func:`tikhonov` with ``regularization=balance``. scikit-image's ``balance``.
    noise_variance : float, optional
        Variance of the image's white noise per voxel, in the image's units squared
        (``> 0``). The filter is
        :math:`\overline{L} S / (|L|^2 S + P)` with :math:`P` = ``noise_variance`` times the
        number of samples of the filter's domain (the noise's power per frequency) and
        :math:`S = \max(|G|^2 - P, 0)` the observed power above the noise.
    regularizer : {"laplacian", "identity"}, optional
        With ``balance``: :math:`R` of the penalty, by default ``"laplacian"``
        (scikit-image's). Not used with ``noise_variance``.
    backend, boundary, normalize_psf, dtype, device, tile_shape, overlap, max_memory
        As in :func:`tikhonov`. ``noise_variance`` estimates the signal's power from the whole
        image, so it is never tiled (a run that would need tiles raises).

    Returns
    -------
    ndarray
        The estimate, with the image's shape and ``dtype`` (it may hold negative values).

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError, MemoryError
        As in :func:`tikhonov`; ``ValueError`` also if neither or both of ``balance`` and
        ``noise_variance`` are given, ``regularizer`` is given with ``noise_variance``, or a
        ``noise_variance`` run would need tiles.

    Notes
    -----
    scikit-image's ``wiener(image, psf, balance, clip=False)`` equals
    ``wiener(image, psf, balance, boundary="wrap")`` (its default Laplacian; its
    ``is_real`` only picks a half or full spectrum). SimpleITK's ``NoiseVariance`` is the
    power per frequency of its unnormalised FFT, :math:`P` itself; its filter
    :math:`\overline{L} / (|L|^2 + P / (|G|^2 - P))` equals ours wherever
    :math:`|G|^2 > P`, and ours is 0 where the data are at or below the noise level, where
    SimpleITK's divides by a negative power.

    Examples
    --------
    >>> import numpy as np
    >>> import gpu_deconv as gd
    >>> from gpu_deconv.psf import gaussian_psf
    >>> rng = np.random.default_rng(0)
    >>> blurred = gd.convolve(rng.random((32, 32)), gaussian_psf((9, 9), 1.5), backend="numpy")
    >>> noisy = blurred + rng.normal(0, 0.01, blurred.shape)
    >>> gd.wiener(noisy, gaussian_psf((9, 9), 1.5), noise_variance=1e-4, backend="numpy").shape
    (32, 32)
    """
    if (balance is None) == (noise_variance is None):
        raise ValueError("give exactly one of balance (scikit-image's) or noise_variance")
    if noise_variance is not None:
        if regularizer is not None:
            raise ValueError("regularizer applies with balance, not with noise_variance")
        variance = v.check_positive(noise_variance, "noise_variance")
        name, weight = "identity", 0.0
    else:
        weight = v.check_positive(balance, "balance")
        name = v.check_regularizer("laplacian" if regularizer is None else regularizer)
        variance = None
    return _filter(
        image,
        psf,
        name,
        weight,
        variance,
        backend=backend,
        boundary=boundary,
        normalize_psf=normalize_psf,
        dtype=dtype,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        max_memory=max_memory,
    )


def _filter(
    image,
    psf,
    regularizer: str,
    regularization: float,
    noise_variance: float | None,
    *,
    backend,
    boundary,
    normalize_psf,
    dtype,
    device,
    tile_shape,
    overlap,
    max_memory,
) -> np.ndarray:
    """Validate, scale, plan tiles and run one direct filter (the two front ends' shared body)."""
    boundary = check_filter_boundary(boundary)
    template = image if dio.is_device_array(image) else None
    if template is not None:  # runs on its own queue, stays there, whole
        be = dio.backend_for(image, backend, device)
        image = dio.check_image(be, image, dtype, stacklevel=2, nonnegative=False)
        psf, tile_shape = dio.host_psf(psf), None
    else:
        be = get_backend(backend, device=device)
        image = v.check_image(image, dtype, stacklevel=3, supported=be.dtypes, nonnegative=False)
    psf = v.check_psf(psf, image.ndim, normalize_psf)
    # Power-of-two scaling (exact; see _scaling): the image to a maximum in [1, 2), an
    # unnormalised PSF to a sum in [1, 2), and the weights to match (PSF scale p enters
    # squared: conj(L) / (|L|^2 + lam) = 2^-p conj(L') / (|L'|^2 + 2^-2p lam)).
    k = _scaling.exponent(dio.array_abs_max(image))
    _scaling.scale_in_place(image, k)
    p = _scaling.sum_exponent(psf)
    if p:
        psf = np.ldexp(psf, -p)
    variance = None if noise_variance is None else math.ldexp(noise_variance, -2 * k)
    weight = math.ldexp(regularization, -2 * p)  # against |L|^2 of the PSF scaled to sum ~1
    resolution = float(np.finfo(image.dtype).eps)
    if noise_variance is None and weight < resolution * float(psf.sum()) ** 2:
        # The eigenvalues carry round-off of about eps (PSF sum 1); dividing by a weight below
        # it would amplify that round-off beyond the data at the frequencies the blur erased.
        wider = " or dtype='float64' (NumPy backend)" if image.dtype == np.float32 else ""
        raise ValueError(
            f"regularization {regularization:g} is below what {image.dtype} resolves "
            f"({resolution:.2g} times the PSF's squared sum): the filter would amplify "
            f"round-off; use a larger value{wider}"
        )
    blur = BlurSpec(psf, image.shape, boundary, "fft", image.dtype)

    def spec_for(piece: BlurSpec) -> FilterSpec:
        return FilterSpec(piece, regularizer, weight, variance, math.ldexp(1.0, -2 * p))

    def need(piece: BlurSpec) -> MemoryNeed:
        plan = be.plan_filter(spec_for(piece))
        n = math.prod(piece.shape) * piece.dtype.itemsize
        buffers = 3 * n if be.uses_host_memory else 2 * n  # input, output (and the host copy)
        return MemoryNeed(plan.memory.total + buffers, max(plan.memory.largest, n))

    tiles = tiling.plan_for_backend(be, blur, need, tile_shape, overlap, max_memory)
    if tiles is not None and noise_variance is not None:
        # Each window would estimate its own signal power: measured 3% relative RMS off.
        raise ValueError(
            "wiener(noise_variance=...) estimates the signal's power from the whole image and "
            "is not tiled; pass tile_shape=None (and memory for the whole image), or use "
            "balance= or tikhonov, which tile"
        )
    piece = blur if tiles is None else blur.with_shape(tiles.window_shape, tiles.window_boundary)
    be.check_memory(need(piece))
    with be.lock:
        prepared = be.spectral_filter(spec_for(piece))

        def run(region: np.ndarray, *_: Any) -> dict[int, np.ndarray]:
            source = be.to_backend(region)
            out = be.empty(region.shape, region.dtype)
            prepared.apply(source, out)
            return {0: out if template is not None else be.to_numpy(out)}

        if tiles is None:
            result = run(image)[0]
        else:
            result = tiling.deconvolve_tiles(tiles, image, image, [0], run)[0]
    result = _scaling.unscale_in_place(result, k - p)
    return result if template is None else dio.like(template, result)


def check_filter_boundary(boundary: Any) -> str:
    """Return a boundary mode a direct filter has; ``"estimate"`` raises naming the options."""
    if isinstance(boundary, str) and boundary in v.ESTIMATED_BOUNDARIES:
        raise ValueError(
            "boundary='estimate' has no direct filter: the blur of the larger estimate domain "
            "cut to the image is diagonal in no transform; use a scipy.ndimage mode "
            f"({', '.join(v.BOUNDARIES)}) here, or richardson_lucy(..., boundary='estimate')"
        )
    return v.check_boundary(boundary)
