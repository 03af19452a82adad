"""Camera profiles: the shipped ones load with the real sensor figures; bad ones are named."""

import math

import numpy as np
import pytest

from skylapse.capture.cameras import (
    ProfileError,
    available_profiles,
    builtin_profile,
    load_profile,
    profile_for_sensor,
)

GOOD = """
name: test
sensor: {model: imx999, width_px: 4000, height_px: 3000, pixel_size_um: 1.5, bayer_pattern: RGGB}
colour:
  ccm: [[1.5, -0.3, -0.2], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]]
lens: {focal_length_mm: 4.0, aperture_f: 2.0, vignetting: [-0.3, -0.1]}
focus:
  lens_position_range: [0, 10]
  hyperfocal_m: 3.0
  calibration:
    - {lens_position: 0.0, distance_m: .inf}
    - {lens_position: 2.0, distance_m: 0.5}
noise: {full_well_e: 5000, read_noise_e: 2}
thermal: {warn_c: 60, max_operating_c: 70}
exposure: {min_s: 0.0001, max_s: 10}
gain: {max: 16}
"""


@pytest.mark.parametrize(
    ("name", "size", "pixel_um"),
    [
        ("imx519", (4656, 3496), 1.22),
        ("imx708", (4608, 2592), 1.4),
        ("imx219", (3280, 2464), 1.12),
    ],
)
def test_shipped_sensor_figures(name, size, pixel_um):
    p = builtin_profile(name)
    assert (p.sensor.width_px, p.sensor.height_px) == size
    assert p.sensor.pixel_size_um == pixel_um
    assert p.resolution == size
    megapixels = size[0] * size[1] / 1e6
    assert megapixels == pytest.approx(
        {"imx519": 16.3, "imx708": 11.9, "imx219": 8.1}[name], abs=0.1
    )


def test_all_shipped_profiles_load():
    names = available_profiles()
    assert {"imx519", "imx708", "imx219", "usb_generic", "simulated"} <= set(names)
    for name in names:
        p = builtin_profile(name)
        assert p.name == name
        assert p.exposure.min_s < p.exposure.max_s and p.gain.min < p.gain.max
    assert builtin_profile("simulated").resolution == (1920, 1080)
    assert not builtin_profile("imx219").focus.has_motor


def test_sensor_model_lookup_by_prefix():
    assert profile_for_sensor("imx708_wide_noir").name == "imx708"
    assert profile_for_sensor("imx519").name == "imx519"
    assert profile_for_sensor("ov5647") is None


def test_focus_calibration_and_lens_maps(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    p = load_profile(path)
    assert p.focus.distance_for(0.0) == math.inf
    assert p.focus.distance_for(2.0) == pytest.approx(0.5)
    assert p.focus.distance_for(1.0) == pytest.approx(1.0)  # interpolated in dioptres
    assert p.focus.lens_position_for(math.inf) == 0.0
    assert p.focus.lens_position_for(1.0) == pytest.approx(1.0)
    vig = p.lens.relative_illumination(40, 30)
    assert vig[15, 20] == pytest.approx(1.0, abs=0.01)
    assert vig[0, 0] == pytest.approx(0.6, abs=0.01) and vig.min() == pytest.approx(0.6, abs=0.01)
    assert np.asarray(p.colour.ccm).sum(axis=1) == pytest.approx([1, 1, 1])


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("max_s: 10", "max_s: -1"), "exposure.max_s"),
        (("max_s: 10", "max_s: 0.00001"), "exposure"),
        (("pixel_size_um: 1.5", "pixel_size_um: big"), "sensor.pixel_size_um"),
        (("bayer_pattern: RGGB", "bayer_pattern: RGBW"), "sensor.bayer_pattern"),
        (("[0.0, -0.5, 1.5]", "[0.0, -0.5, 0.5]"), "colour.ccm"),
        (("[-0.2, 1.4, -0.2], ", ""), "colour.ccm"),
        (("hyperfocal_m: 3.0", "hyperfocal_m: 3.0\n  mode: sometimes"), "focus.mode"),
        (("distance_m: 0.5", "distance_m: .inf"), "focus"),
        (("read_noise_e: 2", "read_noise_e: 2, shot_noise: 1"), "noise.shot_noise"),
        (("warn_c: 60", "warn_c: 80"), "thermal"),
        (("gain: {max: 16}", ""), "gain"),
    ],
)
def test_bad_profiles_name_file_and_field(tmp_path, edit, field):
    old, new = edit
    assert old in GOOD
    path = tmp_path / "broken-camera.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message
    assert f": {field}" in message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ProfileError, match=r"missing\.yaml: cannot read"):
        load_profile(tmp_path / "missing.yaml")
    bad = tmp_path / "syntax.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match=r"syntax\.yaml: not valid YAML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no shipped camera profile 'nope'"):
        builtin_profile("nope")
