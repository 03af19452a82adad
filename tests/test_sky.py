import csv
from pathlib import Path

import numpy as np
import pytest

from skylapse import sky

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sky-ev100.csv"


def test_packaged_table_matches_shared_rows():
    lines = [ln for ln in SHARED.read_text().splitlines() if not ln.startswith("#")]
    for row in csv.DictReader(lines):
        alt, ev = float(row["sun_altitude_deg"]), float(row["ev100"])
        assert sky.ev100(alt) == pytest.approx(ev, abs=0.06)


def test_ev100_falls_monotonically_and_clamps():
    alts = np.linspace(70, -30, 201)
    evs = sky.ev100(alts)
    assert np.all(np.diff(evs) <= 0)
    assert sky.ev100(-30) == pytest.approx(sky.ev100(-18))
    assert sky.ev100(-6) == pytest.approx(0.44, abs=0.1)
    # fastest change near -6 deg: steeper than at +20 deg
    assert sky.ev100(-5) - sky.ev100(-7) > 2 * (sky.ev100(21) - sky.ev100(19))
