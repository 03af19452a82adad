"""Colour stage: white balance by gray world and by Kelvin, contrast and saturation; the
recorded tone (dehaze, shadow lift) and its easing over a render."""

from __future__ import annotations

import numpy as np
import pytest

from skylapse.imaging import srgb
from skylapse.imaging.luma import WEIGHTS as REC709_LUMA
from skylapse.processing.colour import (
    MID_GREY,
    ColourGrade,
    Tone,
    ToneStage,
    adjust_contrast_saturation,
    apply_white_balance,
    dehaze,
    gray_world_gains,
    kelvin_gains,
    planckian_linear_rgb,
    planckian_xy,
    shadow_lift_curve,
)

CAST = np.array([1.25, 1.0, 0.7])  # a warm cast, linear light


def frame_from_linear(lin: np.ndarray) -> np.ndarray:
    return srgb.from_linear(np.asarray(lin, dtype=np.float64))


def mean_linear(frame: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    lin = srgb.to_linear(frame).astype(np.float64)
    return lin[mask].mean(axis=0) if mask is not None else lin.reshape(-1, 3).mean(axis=0)


def cast_grey_card(h: int = 180, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 18 % grey card under a cast, plus clipped colour highlights and dark blotches."""
    rng = np.random.default_rng(3)
    lin = np.full((h, w, 3), 0.18) * CAST * (1 + rng.normal(0, 0.02, (h, w, 1)))
    card = np.ones((h, w), bool)
    lin[:40, :80] = (1.0, 0.9, 0.2)  # a clipped yellow sun patch (red channel at white)
    lin[-30:, -60:] = (0.0, 0.004, 0.0)  # deep shadow with a green tint, below dark_level
    card[:40, :80] = card[-30:, -60:] = False
    return frame_from_linear(lin), card


def test_gray_world_neutralizes_a_cast_grey_card():
    frame, card = cast_grey_card()
    gains = gray_world_gains(frame)
    out = apply_white_balance(frame, gains)
    m = mean_linear(out, card)
    assert np.ptp(m) / m.mean() < 0.005, m  # neutral within 0.5 %
    # Luminance of the card is preserved (colour changes, not exposure).
    before = REC709_LUMA @ mean_linear(frame, card)
    assert REC709_LUMA @ m == pytest.approx(before, rel=0.005)
    # The clipped and the dark patches were ignored: same gains as for the card alone.
    alone = gray_world_gains(frame[60:150, 100:250])
    assert np.allclose(gains, alone, rtol=0.005)
    # Without the exclusions the yellow patch would pull the gains far off.
    naive = 1 / mean_linear(frame)  # plain gray world on every pixel, up to a common factor
    assert abs(naive[2] / naive[0] - gains[2] / gains[0]) > 0.1


def test_gray_world_on_a_colourful_scene_with_a_grey_average():
    rng = np.random.default_rng(5)
    # Patches of random colours whose average is grey, then a cool cast.
    colours = rng.uniform(0.05, 0.6, (12, 3))
    colours = np.concatenate([colours, colours.mean() * 2 - colours])  # pairs average to grey
    lin = np.repeat(np.repeat(colours.reshape(4, 6, 3), 45, axis=0), 53, axis=1)
    cast = np.array([0.8, 1.0, 1.3])
    frame = frame_from_linear(lin * cast)
    gains = np.array(gray_world_gains(frame))
    # The gains undo the cast up to a common factor.
    assert np.allclose(gains * cast / (gains * cast).mean(), 1, atol=0.01)


def test_gray_world_falls_back_to_unity_on_a_black_frame_and_limits_gains():
    assert gray_world_gains(np.zeros((90, 160, 3), np.uint16)) == (1.0, 1.0, 1.0)
    red_sunset = frame_from_linear(np.full((90, 160, 3), (0.5, 0.1, 0.02)))
    g = gray_world_gains(red_sunset, max_gain_ratio=4.0)
    assert max(g) / min(g) == pytest.approx(4.0, rel=1e-6)


def test_planckian_locus_matches_standard_illuminant_a():
    x, y = planckian_xy(2856)  # CIE illuminant A: x = 0.44757, y = 0.40745
    assert abs(x - 0.44757) < 1e-3 and abs(y - 0.40745) < 1e-3
    with pytest.raises(ValueError, match="outside"):
        planckian_xy(1000)


def test_kelvin_gains_direction_identity_and_neutralization():
    assert kelvin_gains(6500) == pytest.approx((1.0, 1.0, 1.0), abs=1e-12)
    tungsten, shade = kelvin_gains(3200), kelvin_gains(10000)
    # Correcting warm tungsten light boosts blue over red; correcting blue shade the reverse.
    assert tungsten[2] / tungsten[0] > 2.0
    assert shade[2] / shade[0] < 0.75
    # A grey card lit by a 3200 K black body becomes the reference white, with its luminance.
    lit = 0.2 * planckian_linear_rgb(3200)
    out = mean_linear(apply_white_balance(frame_from_linear(np.full((8, 8, 3), lit)), tungsten))
    ref = 0.2 * planckian_linear_rgb(6500)
    assert np.allclose(out, ref, rtol=0.01)
    assert REC709_LUMA @ out == pytest.approx(REC709_LUMA @ lit, rel=0.01)


def test_apply_white_balance_is_in_linear_light_and_identity_at_one():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 65536, (60, 80, 3), dtype=np.uint16)
    assert np.array_equal(apply_white_balance(frame, (1, 1, 1)), frame)
    out = apply_white_balance(frame, (2.0, 1.0, 0.5))
    lin_in, lin_out = srgb.to_linear(frame), srgb.to_linear(out)
    unclipped = lin_in[..., 0] < 0.45
    red_in, red_out = lin_in[..., 0][unclipped], lin_out[..., 0][unclipped]
    assert np.allclose(red_out, 2 * red_in, rtol=1e-3, atol=2e-6)
    assert np.array_equal(out[..., 1], frame[..., 1])
    assert np.allclose(lin_out[..., 2], 0.5 * lin_in[..., 2], rtol=1e-3, atol=2e-6)
    assert np.all(out[..., 0][lin_in[..., 0] >= 0.5] == 65535)  # highlights clip to white
    with pytest.raises(ValueError, match="positive"):
        apply_white_balance(frame, (1.0, -1.0, 1.0))


def test_contrast_and_saturation_identity():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 65536, (50, 70, 3), dtype=np.uint16)
    out = adjust_contrast_saturation(frame)
    assert np.array_equal(out, frame) and out is not frame
    assert np.array_equal(ColourGrade().apply(frame), frame)


def test_saturation_zero_makes_grey_and_keeps_luma():
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 65536, (50, 70, 3), dtype=np.uint16)
    grey = adjust_contrast_saturation(frame, saturation=0.0).astype(float)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    luma = frame.astype(float) @ REC709_LUMA
    assert np.max(np.abs(grey[..., 0] - luma)) <= 1.0
    # Saturation 2 doubles chroma (distance from luma), where nothing clips.
    mild = frame // 4 + 24000
    sat = adjust_contrast_saturation(mild, saturation=2.0).astype(float)
    chroma_in = mild - (mild.astype(float) @ REC709_LUMA)[..., None]
    chroma_out = sat - (sat @ REC709_LUMA)[..., None]
    assert np.allclose(chroma_out, 2 * chroma_in, atol=2.0)


def test_contrast_curve_pivots_on_mid_grey():
    ramp = np.linspace(0, 65535, 4096).round().astype(np.uint16)
    frame = np.repeat(ramp[None, :, None], 3, axis=2)
    up = adjust_contrast_saturation(frame, contrast=1.5)[0, :, 0].astype(float)
    down = adjust_contrast_saturation(frame, contrast=0.7)[0, :, 0].astype(float)
    v = ramp / 65535.0
    assert up[0] == 0 and up[-1] == 65535 and down[0] == 0 and down[-1] == 65535
    assert np.all(np.diff(up) >= 0) and np.all(np.diff(down) >= 0)  # monotonic
    near = np.abs(v - MID_GREY) < 0.002
    assert np.allclose(up[near] / 65535, v[near], atol=0.004)  # mid-grey stays put
    # Slope at mid-grey is the contrast; shadows get darker and highlights brighter (or the
    # reverse for contrast < 1).
    i = np.argmin(np.abs(v - MID_GREY))
    slope_up = (up[i + 20] - up[i - 20]) / (ramp[i + 20] - float(ramp[i - 20]))
    assert slope_up == pytest.approx(1.5, rel=0.02)
    q1, q3 = np.searchsorted(v, 0.25), np.searchsorted(v, 0.75)
    assert up[q1] < ramp[q1] < down[q1] and up[q3] > ramp[q3] > down[q3]
    with pytest.raises(ValueError):
        adjust_contrast_saturation(frame, contrast=0)


def test_colour_grade_equals_the_separate_steps():
    rng = np.random.default_rng(6)
    frame = rng.integers(0, 65536, (40, 60, 3), dtype=np.uint16)
    gains = kelvin_gains(4500)
    grade = ColourGrade(gains, contrast=1.3, saturation=1.2)
    expected = adjust_contrast_saturation(apply_white_balance(frame, gains), 1.3, 1.2)
    assert np.max(np.abs(grade.apply(frame).astype(int) - expected)) <= 1
    assert not grade.is_identity and ColourGrade().is_identity


# -- the recorded tone: dehaze, shadow lift, its easing over a render ----------------------------


def hazy_scene(seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(haze-free J, hazy I, airlight) in linear light: coloured 16 px blocks (each with one
    channel nearly black, as the dark channel prior expects outdoors) under haze that thickens
    toward the top, where a band of sky is nearly all airlight."""
    rng = np.random.default_rng(seed)
    h, w = 180, 320
    blocks = rng.uniform(0.08, 0.6, (h // 16 + 1, w // 16 + 1, 3))
    dark = rng.integers(0, 3, blocks.shape[:2])
    blocks[np.arange(blocks.shape[0])[:, None], np.arange(blocks.shape[1]), dark] = 0.01
    scene = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)[:h, :w]
    t = np.linspace(0.0, 0.85, h)[:, None, None] * np.ones((1, w, 1))
    airlight = np.array([0.78, 0.8, 0.84])
    hazy = scene * t + airlight * (1 - t)
    return scene, hazy, airlight


def test_dehaze_recovers_the_scene_under_haze():
    scene, hazy, airlight = hazy_scene()
    frame = frame_from_linear(hazy)
    out, estimated = dehaze(frame, 0.95)
    assert np.allclose(estimated, airlight, atol=0.05)
    rows = slice(60, None)  # below the sky band, where t >= 0.3
    before = np.abs(srgb.to_linear(frame)[rows] - scene[rows]).mean()
    after = np.abs(srgb.to_linear(out)[rows] - scene[rows]).mean()
    assert after < 0.4 * before
    # the contrast the haze took comes back
    contrast = [float(x[rows].std()) for x in (srgb.to_linear(frame), srgb.to_linear(out), scene)]
    assert abs(contrast[1] - contrast[2]) < 0.3 * abs(contrast[0] - contrast[2])
    same, _ = dehaze(frame, 0.0)
    assert np.array_equal(same, frame)
    # half the strength removes less
    half, _ = dehaze(frame, 0.4, estimated)
    mid = np.abs(srgb.to_linear(half)[rows] - scene[rows]).mean()
    assert after < mid < before
    with pytest.raises(ValueError, match="dehaze strength"):
        dehaze(frame, 0.99)


def test_shadow_lift_curve_lifts_shadows_only_and_stays_monotonic():
    v = np.linspace(0, 1, 4097)
    assert np.array_equal(shadow_lift_curve(v, 0.0), v)
    lifted = shadow_lift_curve(v, 1.0)
    assert np.all(np.diff(lifted) > 0)
    assert lifted[0] == 0 and lifted[-1] == 1
    assert shadow_lift_curve(MID_GREY, 1.0) == pytest.approx(MID_GREY)
    assert np.array_equal(lifted[v >= MID_GREY], v[v >= MID_GREY])
    assert shadow_lift_curve(MID_GREY / 3, 0.5) - MID_GREY / 3 == pytest.approx(0.1)


def test_tone_from_record_validates_by_field():
    assert Tone.from_record({}) is None and Tone.from_record(None) is None
    tone = Tone.from_record({"tone": {"shadow_lift": 0.25, "contrast": 1.2, "dehaze": 0.4}})
    assert tone == Tone(0.25, 1.2, 0.4) and not tone.is_identity
    with pytest.raises(ValueError, match=r"tone\.contrast"):
        Tone.from_record({"tone": {"contrast": "high"}})
    with pytest.raises(ValueError, match=r"tone\.dehaze"):
        Tone.from_record({"tone": {"dehaze": 2.0}})


def test_tone_stage_eases_a_change_of_strategy_and_applies_it():
    overcast = Tone(0.25, 1.2, 0.4)
    stage = ToneStage([None] * 30 + [overcast] * 30, ramp_frames=10)
    lifts = stage.settings[:, 0]
    assert lifts[0] == 0.0 and lifts[-1] == pytest.approx(0.25)
    assert np.all(np.diff(lifts) >= 0) and 0 < lifts[30] < 0.25  # no jump at the switch
    assert ToneStage([None, Tone()]).is_identity
    _, hazy, _ = hazy_scene()
    frame = frame_from_linear(hazy)
    assert np.array_equal(stage.apply(0, frame), frame)
    toned = stage.apply(59, frame)
    dehazed, _ = dehaze(frame, 0.4)
    assert np.abs(toned.astype(int) - dehazed.astype(int)).mean() > 100  # lift and contrast
    assert srgb.to_linear(toned).std() > srgb.to_linear(frame).std()
