"""The white balance of a whole sequence, chosen once: a colour temperature's gains, or gray
world as the median over up to nine frames spread across it (per-frame gray world would itself
flicker). Gains are linear (`colour.Gains`), for `colour.ColourGrade` and the HLG grade."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skylapse.processing import colour, sources
from skylapse.processing.options import WhiteBalance


def sequence_white_balance(
    option: WhiteBalance | None, samples: Sequence[Path]
) -> colour.Gains | None:
    """The gains of ``option`` (None: leave the colours as shot); gray world reads the frames
    ``samples`` (`shots.sample_shots`), leaving out those that cannot be read, and gives None
    when none can."""
    if option is None:
        return None
    if option.kelvin is not None:
        return colour.kelvin_gains(option.kelvin)
    gains = []
    for path in samples:
        try:
            img = sources.read_frame(path)
        except sources.FrameReadError:
            continue
        gains.append(colour.gray_world_gains(img))
    if not gains:
        return None
    r, g, b = np.median(np.array(gains), axis=0)
    return (float(r), float(g), float(b))
