import csv
from importlib import resources

import numpy as np
import pytest

from skylapse import sky


def test_ev100_reproduces_every_row_of_the_packaged_table():
    """The package's own table is the source of truth: its EV column is log2(lux / 2.5), and
    `sky.ev100` (interpolating log10(lux)) lands on every row."""
    text = resources.files("skylapse").joinpath("data/sky-ev100.csv").read_text()
    rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
    assert len(rows) >= 8
    for row in rows:
        alt, lux, ev = (float(row[k]) for k in ("sun_altitude_deg", "illuminance_lux", "ev100"))
        assert np.log2(lux / 2.5) == pytest.approx(ev, abs=0.06), row
        assert sky.ev100(alt) == pytest.approx(ev, abs=0.06), row


def test_ev100_falls_monotonically_and_clamps():
    alts = np.linspace(70, -30, 201)
    evs = sky.ev100(alts)
    assert np.all(np.diff(evs) <= 0)
    assert sky.ev100(-30) == pytest.approx(sky.ev100(-18))
    assert sky.ev100(-6) == pytest.approx(0.44, abs=0.1)
    # fastest change near -6 deg: steeper than at +20 deg
    assert sky.ev100(-5) - sky.ev100(-7) > 2 * (sky.ev100(21) - sky.ev100(19))
