"""Where frames come from: finding a sequence on disk, its metadata, and decoding frames.

This is the input edge of the render pipeline (the imperative shell around the pure stages).

API
---
``discover_frames(src) -> Discovery(frames, skipped)``
    ``src`` is a folder (its supported files, not recursive, dotfiles ignored), a glob
    (``"/data/cam1/2024-06-*/*.jpg"``; ``**`` recurses) or a single file. Supported: JPEG, PNG,
    8-/16-bit TIFF and DNG (DNG needs ``rawpy``: ``pip install 'skylapse[raw]'``).
    Only headers are read (no pixel decoding), so 2,000 files take well under a second or two.
    ``frames`` is a list of :class:`FrameInfo` in capture order; ``skipped`` lists
    :class:`SkippedFile` (path + reason) for zero-byte, unreadable, truncated or unsupported
    files: bad files are reported, never raised. ``Discovery`` is a NamedTuple, so
    ``frames, skipped = discover_frames(src)`` works. A JPEG, PNG or TIFF with a DNG of the same
    name beside it (a RAW+JPEG pair, as a station with ``capture.raw`` takes) is the same shot:
    the DNG is the frame, the other is listed in ``skipped`` (``raw_twins``).

``raw_twins(paths) -> {path: dng}``
    The files of ``paths`` that a DNG of the same folder and name stands for.

``probe_frame(path) -> FrameInfo``
    The header metadata of one file, as ``discover_frames`` reads it (no pixel decoding), for a
    caller that must check a frame's size before decoding it. Raises :class:`FrameReadError`,
    or its subclass :class:`FrameTooLargeError` when Pillow's own decompression-bomb guard
    (``PIL.Image.MAX_IMAGE_PIXELS``, refusing twice that many pixels) turns the header down.

``read_frame(path) -> ndarray``
    Full-resolution frame in the pipeline convention (:mod:`skylapse.imaging.srgb`):
    uint16 (H, W, 3) RGB, sRGB-encoded. 8-bit sources are scaled by 257, 16-bit TIFF/PNG kept,
    grayscale expanded to three channels, alpha dropped, EXIF orientation applied, DNG
    demosaiced by LibRaw (rawpy) in linear light (no gamma: black level subtracted, white level
    at 65535, the as-shot white balance, the DNG's colour matrix to linear sRGB, *no* per-frame
    auto-brightening, which would flicker) and then encoded with the exact sRGB curve. Raises
    :class:`FrameReadError` for corrupt or truncated files.

``read_linear(path) -> ndarray``
    The frame as float32 (H, W, 3) linear light in [0, 1]: a DNG straight from LibRaw's linear
    output (all of the sensor's bits, none of a tone curve's rounding), other files through the
    sRGB decoding curve. Its exposure is the one ``FrameInfo`` reports (``exposure_time_s``,
    ``iso``, ``f_number``: for a Skylapse DNG the exact values of its EXIF sub-IFD, which win
    over IFD0's, where PiDNG rounds the exposure time to 1/N s).

``read_gray_reduced(path, factor=4, linear=True) -> ndarray``
    Fast reduced-resolution grayscale for the analysis pass, float32 of shape
    ``(ceil(H / factor), ceil(W / factor))``. JPEG uses libjpeg's DCT-domain scaling
    (``cv2.IMREAD_REDUCED_GRAYSCALE_N``: the decoder skips most of the inverse DCT work); other
    formats are decoded and shrunk with ``cv2.INTER_AREA``. The gray value is the BT.601 luma of
    the sRGB-encoded samples (what a JPEG stores as Y), so every format gives the same number for
    the same picture. With ``linear=True`` (default) it is passed through the sRGB decoding
    curve: an approximation of linear relative luminance in [0, 1] that is exact for neutral
    colours, which is what deflicker statistics need. ``linear=False`` gives the encoded luma in
    [0, 1] (better suited to feature/motion estimation).

``fit_to_size(frame, size, path=None) -> ndarray``
    Scales a frame of another size to the sequence's ``(width, height)``, or raises
    :class:`AspectMismatchError` (naming the file) if the aspect ratios differ by more than 1 %.

Modules
-------
``discovery`` (finding a sequence's files and their capture order, the RAW+JPEG twins),
``metadata`` (a file's header: size, EXIF capture time and exposure; the truncation checks),
``decode`` (pixels: JPEG reduced decoding, 8-/16-bit files, DNG through LibRaw in linear light),
``fit`` (scaling a frame to the sequence's size, the aspect check) and ``formats`` (the supported
suffixes and the errors of reading a frame). Import the names below from this package.
"""

from skylapse.processing.sources.decode import read_frame, read_gray_reduced, read_linear
from skylapse.processing.sources.discovery import (
    Discovery,
    SkippedFile,
    discover_frames,
    raw_twins,
)
from skylapse.processing.sources.fit import AspectMismatchError, fit_to_size
from skylapse.processing.sources.formats import (
    SUPPORTED_SUFFIXES,
    FrameReadError,
    FrameTooLargeError,
    MissingRawSupportError,
)
from skylapse.processing.sources.metadata import FrameInfo, probe_frame

__all__ = [
    "SUPPORTED_SUFFIXES",
    "AspectMismatchError",
    "Discovery",
    "FrameInfo",
    "FrameReadError",
    "FrameTooLargeError",
    "MissingRawSupportError",
    "SkippedFile",
    "discover_frames",
    "fit_to_size",
    "probe_frame",
    "raw_twins",
    "read_frame",
    "read_gray_reduced",
    "read_linear",
]
