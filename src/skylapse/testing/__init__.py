"""Test and bench support: synthetic timelapses of :mod:`skylapse.scene` with known ground truth.

- :mod:`skylapse.testing.sequence`: :class:`SequenceSpec` and :func:`generate_sequence`, which
  writes a sunset with flicker, exposure steps, shake and noise to a folder;
- :mod:`skylapse.testing.truth`: :class:`SequenceTruth` / :class:`FrameTruth` (``truth.json``)
  and :func:`central_log2_luminance`, the brightness the truth is stated in.

Nothing in the services imports this package.
"""

from skylapse.testing.sequence import SequenceSpec, generate_sequence
from skylapse.testing.truth import FrameTruth, SequenceTruth, central_log2_luminance

__all__ = [
    "FrameTruth",
    "SequenceSpec",
    "SequenceTruth",
    "central_log2_luminance",
    "generate_sequence",
]
