"""Test and bench support: synthetic timelapses of :mod:`skylapse.scene` with known ground truth.

- :mod:`skylapse.testing.sequence`: :class:`SequenceSpec` and :func:`generate_sequence`, which
  writes a sunset with flicker, exposure steps, shake and noise (and HDR brackets) to a folder,
  and :func:`scene_radiance`, the light of any of its frames before the camera;
- :mod:`skylapse.testing.truth`: :class:`SequenceTruth` / :class:`FrameTruth` (``truth.json``);
- :func:`central_log2_luminance` (from :mod:`skylapse.imaging.luma`), the brightness the truth
  is stated in.

Nothing in the services imports this package.
"""

from skylapse.imaging.luma import central_log2_luminance
from skylapse.testing.sequence import SequenceSpec, generate_sequence, scene_radiance
from skylapse.testing.truth import FrameTruth, SequenceTruth

__all__ = [
    "FrameTruth",
    "SequenceSpec",
    "SequenceTruth",
    "central_log2_luminance",
    "generate_sequence",
    "scene_radiance",
]
