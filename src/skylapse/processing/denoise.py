"""Noise reduction for timelapse frames: motion-adaptive temporal averaging, or spatial filtering.

Frames reaching this stage are already deflickered and stabilized, so wherever the scene is
static the same pixel in neighbouring frames sees the same radiance plus independent sensor
noise; averaging ``2r + 1`` frames divides the noise standard deviation by up to
``sqrt(2r + 1)`` without any loss of detail. Where the scene moves (clouds, shadows, people)
plain averaging would ghost, so each neighbour is weighted per pixel by how well a small patch
around that pixel agrees with the centre frame, given the expected noise: the weight of
non-local means (Buades, Coll & Morel 2005; the patch-distance correction of Buades, Coll &
Morel, "Non-Local Means Denoising", IPOL 2011), restricted to the same position in the
neighbouring frames, i.e. a temporal, patch-based bilateral filter (Tomasi & Manduchi 1998;
Bennett & McMillan 2005)::

    D_i = mean over a patch of (N_i - C)^2          (on the reduced image, see below)
    w_i = exp(-max(D_i - 2 sigma^2, 0) / h^2),   h = 2 * strength * sigma
    out = (C + sum_i w_i N_i) / (1 + sum_i w_i)

A patch that differs by ``Delta`` (beyond the noise) from the centre gets weight
``exp(-Delta^2 / h^2)``: the largest difference that can leak into the output is about
``0.3 h``, below the noise level, so moving clouds do not ghost.

Speed: patch distances and weights are computed at half resolution on the channel mean (a
2x2 area average, whose 3x3 patches cover 6x6 pixels of the frame; the averaging also lowers
the noise of the distance, so smaller motions stand out), and only the final weighted sum
touches full-resolution pixels, in uint16 fixed point (weights in 1/16384 that sum exactly to
one), with OpenCV operations that release the GIL. The noise level is estimated per centre
frame from that half-resolution image (Immerkaer 1996 with a robust median, Donoho &
Johnstone 1994), so it follows the camera from day to night. Work is done on the
sRGB-encoded values: the sRGB curve approximately equalizes shot-noise variance across
brightness (like the Anscombe transform), so a single noise level fits the whole frame.

API
---
- ``estimate_noise_sigma(image)``: robust noise standard deviation of one image.
- ``temporal_denoise(frames, centre, strength=, noise_sigma=)``: the pure per-frame function
  (optional ``reduced=`` from ``reduce_for_motion`` and ``scratch=`` buffers, for streaming).
- ``spatial_denoise(frame, strength=, noise_sigma=)``: edge-preserving single-frame filter
  (fast guided filter on luma, guided chroma at half resolution).
- ``Denoiser(mode, radius=, strength=)``: the streaming shell for pass 2. ``push(frame)``
  returns the frames that became ready (``radius`` frames of delay in temporal mode, none in
  the others); ``flush()`` at the end returns the rest. First and last frames are denoised with
  the neighbours that exist. ``denoise_frames(iterable, ...)`` wraps it as a generator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import cv2
import numpy as np

DenoiseMode = Literal["temporal", "spatial", "off"]
DENOISE_MODES: tuple[str, ...] = ("temporal", "spatial", "off")

# Fixed-point unit of the blending weights: large enough that rounding is far below one
# uint16 step, small enough that a weight fits in uint16.
_WEIGHT_ONE = 16384

# Immerkaer's noise-estimation kernel: the difference of two Laplacians, which cancels
# linear image structure; for white noise of std s its response has std 6 s.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): median absolute value -> std for Gaussian data


def estimate_noise_sigma(image: np.ndarray, max_samples: int = 250_000) -> float:
    """Standard deviation of the additive noise of one image, in the image's own units.

    Fast noise variance estimation (Immerkaer, CVIU 64(2), 1996): the image is filtered with
    the difference of two Laplacian kernels, which removes smooth structure and edges to first
    order; the noise standard deviation follows from the filter's response. Instead of
    Immerkaer's mean absolute response, the median is used (the robust MAD estimator of
    Donoho & Johnstone, 1994), so the textured minority of the image does not count.

    ``image`` is ``(H, W)`` or ``(H, W, C)``; all channels are pooled. For speed at most
    about ``max_samples`` filter responses (a regular subsample) enter the median.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 3 or img.shape[1] < 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image of at least 3x3, got {img.shape}")
    response = cv2.filter2D(img.astype(np.float32, copy=False), cv2.CV_32F, _IMMERKAER)
    interior = np.abs(response[1:-1, 1:-1]).reshape(-1)
    step = max(1, interior.size // max_samples)
    sample = interior[::step]
    median = float(np.partition(sample, sample.size // 2)[sample.size // 2])
    return _MAD_TO_SIGMA * median / 6.0


def reduce_for_motion(frame: np.ndarray) -> np.ndarray:
    """The motion detector's working image: 2x2 area average of the channel mean, float32.

    Comparing the channel mean is three times cheaper than comparing colours and misses only
    changes of pure hue at constant brightness, which moving clouds and shadows never are.
    """
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    if small.ndim == 3:
        channels = small.shape[2]
        small = cv2.transform(small, np.full((1, channels), 1.0 / channels, dtype=np.float32))
    return small


def _check_frames(frames: Sequence[np.ndarray]) -> None:
    if len(frames) == 0:
        raise ValueError("no frames to denoise")
    first = frames[0]
    for f in frames:
        if f.dtype != np.uint16:
            raise TypeError(f"expected uint16 frames, got {f.dtype}")
        if f.shape != first.shape:
            raise ValueError(f"frames differ in shape: {f.shape} vs {first.shape}")
    if first.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) frames, got {first.shape}")


def _patch_distance(centre_small: np.ndarray, neighbour_small: np.ndarray) -> np.ndarray:
    """Mean squared difference over 3x3 patches of the reduced images (6x6 frame pixels)."""
    diff = cv2.subtract(neighbour_small, centre_small)
    return cv2.blur(cv2.multiply(diff, diff), (3, 3), borderType=cv2.BORDER_REFLECT)


class DenoiseScratch:
    """Reusable full-resolution work buffers for ``temporal_denoise``.

    Allocating fresh 12 MB arrays for every frame costs page faults that can double the
    stage's CPU time; ``Denoiser`` keeps one of these and passes it in.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = (name, shape)
        if key not in self._buffers:
            self._buffers[key] = np.empty(shape, dtype=np.uint16)
        return self._buffers[key]


def temporal_denoise(
    frames: Sequence[np.ndarray],
    centre: int,
    *,
    strength: float = 1.0,
    noise_sigma: float | None = None,
    reduced: Sequence[np.ndarray] | None = None,
    scratch: DenoiseScratch | None = None,
) -> np.ndarray:
    """Denoise ``frames[centre]`` by motion-adaptive averaging with the other frames given.

    Each other frame is a neighbour, weighted per pixel by the non-local-means weight of the
    patch difference to the centre frame (see the module docstring): static areas are averaged,
    moving ones keep the centre frame. At the ends of a sequence pass just the neighbours that
    exist (e.g. ``frames[0:2]`` with ``centre=0``).

    Parameters
    ----------
    frames : sequence of uint16 arrays, (H, W, 3) or (H, W)
        The centre frame and its aligned neighbours, all the same shape.
    centre : int
        Index of the frame to denoise within ``frames``.
    strength : float
        Scales the weights' tolerance ``h``; 1 suits Gaussian-like sensor noise, larger
        averages more (and risks faint ghosts), 0 returns the centre frame unchanged.
    noise_sigma : float, optional
        Noise standard deviation of one full-resolution sample of one channel in uint16 units,
        assumed white and independent between channels. Estimated from the centre frame when
        omitted (recommended: it tracks day and night, and needs no such assumption).
    reduced : sequence of float32 arrays, optional
        ``reduce_for_motion`` of each frame (``Denoiser`` caches them so that each frame is
        reduced once, not once per window).
    scratch : DenoiseScratch, optional
        Work buffers to reuse between calls (the result is always a new array).

    Returns
    -------
    uint16 array of the frames' shape.
    """
    _check_frames(frames)
    if not 0 <= centre < len(frames):
        raise IndexError(f"centre {centre} outside 0..{len(frames) - 1}")
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    centre_frame = frames[centre]
    if len(frames) == 1 or strength == 0:
        return centre_frame.copy()
    small = list(reduced) if reduced is not None else [reduce_for_motion(f) for f in frames]
    if len(small) != len(frames):
        raise ValueError("reduced must hold one image per frame")
    sigma_small = _reduced_noise_sigma(centre_frame, small[centre], noise_sigma)
    neighbours = [i for i in range(len(frames)) if i != centre]
    weights, total = _neighbour_weights(small, centre, neighbours, sigma_small, strength)
    scratch = scratch if scratch is not None else DenoiseScratch()
    return _blend(frames, centre, neighbours, weights, total, scratch)


def _reduced_noise_sigma(
    centre_frame: np.ndarray, centre_small: np.ndarray, noise_sigma: float | None
) -> float:
    """The noise standard deviation of the reduced centre image (``reduce_for_motion``).

    Estimated from that image, or derived from ``noise_sigma`` (one full-resolution sample of
    one channel, white): the reduced pixel is the mean of ``4 * channels`` samples.
    """
    if noise_sigma is None:
        sigma_small = estimate_noise_sigma(centre_small)
    else:
        channels = 1 if centre_frame.ndim == 2 else centre_frame.shape[2]
        sigma_small = float(noise_sigma) / (2.0 * np.sqrt(channels))  # mean of 4 * channels
    # A floor of a quarter of a uint16 step keeps noiseless synthetic input well defined.
    return max(sigma_small, 0.25)


def _neighbour_weights(
    small: Sequence[np.ndarray],
    centre: int,
    neighbours: Sequence[int],
    sigma_small: float,
    strength: float,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each neighbour's non-local-means weight per reduced pixel (the centre's is 1), and the
    sum of all weights, the centre's included (float32, reduced resolution)."""
    expected = 2.0 * sigma_small**2  # E[D] for a static patch
    h2 = (2.0 * strength * sigma_small) ** 2
    weights = []
    for i in neighbours:
        excess = cv2.max(_patch_distance(small[centre], small[i]) - expected, 0.0)
        weights.append(cv2.exp(excess * np.float32(-1.0 / h2)))
    total = weights[0] + 1.0
    for wt in weights[1:]:
        total += wt
    return weights, total


def _blend(
    frames: Sequence[np.ndarray],
    centre: int,
    neighbours: Sequence[int],
    weights: Sequence[np.ndarray],
    total: np.ndarray,
    scratch: DenoiseScratch,
) -> np.ndarray:
    """The weighted mean of the frames at full resolution, in uint16 fixed point (a new array).

    The weights are normalised by ``total`` into 1/16384 units and upsampled bilinearly; the
    centre takes what the rounded neighbours leave, so that the weights at each reduced pixel
    sum to exactly one.
    """
    centre_frame = frames[centre]
    weight_full = scratch.get("weight", centre_frame.shape)
    term = scratch.get("term", centre_frame.shape)
    out = np.empty_like(centre_frame)
    remaining = np.full(total.shape, _WEIGHT_ONE, dtype=np.uint16)
    for k, (i, wt) in enumerate(zip(neighbours, weights, strict=True)):
        q = cv2.divide(wt, total, scale=_WEIGHT_ONE, dtype=cv2.CV_16U)
        cv2.subtract(remaining, q, dst=remaining)
        _upsample_weights(q, weight_full)
        cv2.multiply(frames[i], weight_full, dst=out if k == 0 else term, scale=1 / _WEIGHT_ONE)
        if k > 0:
            cv2.add(out, term, dst=out)
    _upsample_weights(remaining, weight_full)
    cv2.multiply(centre_frame, weight_full, dst=term, scale=1 / _WEIGHT_ONE)
    return cv2.add(out, term, dst=out)


def _upsample_weights(q_small: np.ndarray, dst: np.ndarray) -> None:
    """Bilinear upsampling of a uint16 weight map into ``dst``, one copy per channel."""
    if dst.ndim == 3:
        q_small = cv2.merge([q_small] * dst.shape[2])
    cv2.resize(q_small, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_LINEAR)


# Opponent colour space for spatial denoising: Y = (R+G+B)/3, C1 = (R-B)/2, C2 = (2G-R-B)/4.
# Exactly invertible; chroma is stored offset by 32768 so that every channel fits uint16 and
# the inverse (with its offsets) is a single affine cv2.transform.
_TO_OPPONENT = np.array(
    [[1 / 3, 1 / 3, 1 / 3, 0], [0.5, 0, -0.5, 32768], [-0.25, 0.5, -0.25, 32768]],
    dtype=np.float32,
)
_FROM_OPPONENT = np.array(
    [
        [1, 1, -2 / 3, -32768 / 3],
        [1, 0, 4 / 3, -32768 * 4 / 3],
        [1, -1, -2 / 3, 32768 * 5 / 3],
    ],
    dtype=np.float32,
)
_TO_LUMA = np.ascontiguousarray(_TO_OPPONENT[:1, :3])


def _box(img: np.ndarray, radius: int) -> np.ndarray:
    return cv2.blur(img, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def _guided_coefficients(
    guide: np.ndarray,
    mean_guide: np.ndarray,
    var_guide: np.ndarray,
    src: np.ndarray,
    radius: int,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Box-averaged guided-filter coefficients, ``q = a * guide + b`` (He, Sun & Tang 2013).

    All arrays are single-channel float32 of one size; ``mean_guide`` and ``var_guide`` are the
    guide's box mean and variance, shared by every source filtered with the same guide.
    """
    mean_src = _box(src, radius)
    cov = _box(src * guide, radius) - mean_src * mean_guide
    a = cov / (var_guide + eps)
    b = mean_src - a * mean_guide
    return _box(a, radius), _box(b, radius)


def spatial_denoise(
    frame: np.ndarray, strength: float = 1.0, *, noise_sigma: float | None = None
) -> np.ndarray:
    """Edge-preserving spatial denoising of one uint16 RGB frame, for when frames move too much.

    The frame is split into luma and two opponent chroma channels. Luma is smoothed by a
    self-guided filter (He, Sun & Tang, "Guided Image Filtering", TPAMI 2013) whose
    coefficients are computed at half resolution and applied to the full-resolution luma (the
    Fast Guided Filter, He & Sun 2015): flat areas, where the local variance is at the noise
    level, are averaged over about 10x10 pixels, while edges and texture well above the noise
    (variance >> eps = (2 * strength * sigma)^2) pass unchanged. Chroma, whose noise is blotchy
    and whose detail the eye barely resolves (the encoder's 4:2:0 keeps half of it anyway), is
    filtered at half resolution with the luma as guide, so colour stops at luma edges, and
    upsampled.

    ``noise_sigma`` is the noise of one full-resolution luma sample in uint16 units (estimated
    from the frame when omitted). ``strength`` 0 returns the frame unchanged.
    """
    if frame.dtype != np.uint16 or frame.ndim != 3 or frame.shape[2] != 3:
        raise TypeError(f"expected a uint16 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    if strength == 0:
        return frame.copy()
    h, w = frame.shape[:2]
    # Full-resolution luma rounded to integers (adds 0.3 LSB of noise), as float32.
    luma = cv2.transform(frame, _TO_LUMA).astype(np.float32)
    small = cv2.resize(frame, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    opponent_small = cv2.transform(small.astype(np.float32), _TO_OPPONENT)
    luma_small, c1_small, c2_small = cv2.split(opponent_small)

    if noise_sigma is None:
        sigma_small = estimate_noise_sigma(luma_small)
    else:
        sigma_small = float(noise_sigma) / 2.0
    sigma_small = max(sigma_small, 0.25)
    eps = (2.0 * strength * sigma_small) ** 2

    # Luma: self-guided, so cov = var and a = var / (var + eps).
    mean_l, var_l = _box_mean_var(luma_small, radius=2)
    a = var_l / (var_l + eps)
    a_mean, b_mean = _box(a, 2), _box(mean_l - a * mean_l, 2)
    full = (w, h)
    a_full = cv2.resize(a_mean, full, interpolation=cv2.INTER_LINEAR)
    b_full = cv2.resize(b_mean, full, interpolation=cv2.INTER_LINEAR)
    luma_out = cv2.add(cv2.multiply(a_full, luma), b_full, dtype=cv2.CV_16U)

    # Chroma: guided by luma, with a wider window and a larger eps (relative to the guide's
    # variance), so flat colour is averaged strongly but stops where luma has an edge.
    mean_g, var_g = _box_mean_var(luma_small, radius=3)
    chroma = []
    for c_small in (c1_small, c2_small):
        ca, cb = _guided_coefficients(luma_small, mean_g, var_g, c_small, 3, 4.0 * eps)
        c_out = cv2.add(cv2.multiply(ca, luma_small), cb, dtype=cv2.CV_16U)
        chroma.append(cv2.resize(c_out, full, interpolation=cv2.INTER_LINEAR))
    return cv2.transform(cv2.merge([luma_out, *chroma]), _FROM_OPPONENT)


def _box_mean_var(img: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    mean = _box(img, radius)
    return mean, _box(img * img, radius) - mean * mean


class Denoiser:
    """Streaming denoiser for pass 2: push frames in order, get denoised frames in order.

    In ``"temporal"`` mode the frame ``k`` comes out when frame ``k + radius`` has been pushed
    (a delay of ``radius`` frames); it holds at most ``2 * radius + 1`` frames plus their
    half-resolution copies. ``"spatial"`` and ``"off"`` return each frame at once.
    Call ``flush()`` after the last frame.
    """

    def __init__(
        self,
        mode: DenoiseMode = "temporal",
        radius: int = 1,
        strength: float = 1.0,
        noise_sigma: float | None = None,
    ) -> None:
        if mode not in DENOISE_MODES:
            modes = ", ".join(DENOISE_MODES)
            raise ValueError(f"denoise mode must be one of {modes}, not {mode!r}")
        if radius < 1:
            raise ValueError(f"radius must be >= 1, got {radius}")
        self.mode = mode
        self.radius = radius
        self.strength = strength
        self.noise_sigma = noise_sigma
        self._window: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._first_index = 0  # sequence index of self._window[0]
        self._pushed = 0
        self._next_out = 0
        self._scratch = DenoiseScratch()

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """Add the next frame; return the denoised frames that are now complete (0 or 1)."""
        if self.mode == "off":
            return [frame]
        if self.mode == "spatial":
            return [spatial_denoise(frame, self.strength, noise_sigma=self.noise_sigma)]
        self._window.append((frame, reduce_for_motion(frame)))
        self._pushed += 1
        ready = []
        while self._next_out + self.radius < self._pushed:
            ready.append(self._emit())
        return ready

    def flush(self) -> list[np.ndarray]:
        """Denoise and return the frames still waiting for neighbours (the sequence's tail)."""
        if self.mode != "temporal":
            return []
        ready = []
        while self._next_out < self._pushed:
            ready.append(self._emit())
        self._window.clear()
        return ready

    def _emit(self) -> np.ndarray:
        c = self._next_out
        lo = max(self._first_index, c - self.radius)
        hi = min(self._pushed - 1, c + self.radius)
        window = [self._window[i - self._first_index] for i in range(lo, hi + 1)]
        out = temporal_denoise(
            [f for f, _ in window],
            c - lo,
            strength=self.strength,
            noise_sigma=self.noise_sigma,
            reduced=[s for _, s in window],
            scratch=self._scratch,
        )
        self._next_out += 1
        # Frames older than the next centre's window are no longer needed.
        while self._window and self._first_index < self._next_out - self.radius:
            self._window.popleft()
            self._first_index += 1
        return out


def denoise_frames(
    frames: Iterable[np.ndarray],
    mode: DenoiseMode = "temporal",
    radius: int = 1,
    strength: float = 1.0,
) -> Iterator[np.ndarray]:
    """Generator form of ``Denoiser``: yields one denoised frame per input frame, in order."""
    denoiser = Denoiser(mode, radius=radius, strength=strength)
    for frame in frames:
        yield from denoiser.push(frame)
    yield from denoiser.flush()
