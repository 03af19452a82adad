"""`RenderOptions`: one definition, parsed once, written back as text; the API's narrower limits."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import ValidationError

from skylapse.cli.render import render as render_command
from skylapse.config import ConfigError, default_config, load_config
from skylapse.processing.options import (
    DEFAULT_FORMATS,
    MAX_RENDER_PIXELS,
    ApiRenderOptions,
    OutputSize,
    OutputSpec,
    RenderOptions,
    WhiteBalance,
)


def field_errors(model: type[RenderOptions], **values: object) -> set[str]:
    with pytest.raises(ValidationError) as info:
        model(**values)
    return {str(e["loc"][0]) for e in info.value.errors()}


def test_the_defaults_are_one_definition_everywhere() -> None:
    default = RenderOptions()
    assert [str(s) for s in default.formats] == list(DEFAULT_FORMATS)
    assert default_config().processing.render == default
    # the command line's defaults are the model's, as text
    params = inspect.signature(render_command).parameters
    text = default.model_dump(mode="json")
    assert params["format"].default == text["formats"]
    for name in ("fps", "preset", "stabilize", "denoise", "brackets", "keogram", "size"):
        assert params[name].default == text[name], name
    assert RenderOptions.model_validate(default.model_dump(mode="json")) == default


def test_text_is_parsed_once_and_written_back() -> None:
    options = RenderOptions(
        formats=["H264", "frames,h264", " h265 "],
        size="4k",
        white_balance="5600k",
        brackets="AUTO",
        focus_stack=None,
    )
    assert options.formats == (OutputSpec("h264"), OutputSpec("frames"), OutputSpec("h265"))
    assert options.size == OutputSize(2160)
    assert options.white_balance == WhiteBalance(5600.0)
    assert options.brackets == "auto"
    text = options.model_dump(mode="json")
    assert text["formats"] == ["h264", "frames", "h265"]
    assert (text["size"], text["white_balance"]) == ("2160p", "5600K")
    assert RenderOptions.model_validate(text) == options
    assert RenderOptions(formats="h265,h264").formats == RenderOptions().formats
    assert RenderOptions(white_balance="grey_world").white_balance == WhiteBalance()
    assert str(RenderOptions(white_balance="gray-world").white_balance) == "gray-world"
    assert RenderOptions(brackets="3").brackets == 3
    assert RenderOptions(size="1920 x 1080").size == OutputSize(1080, 1920)
    assert RenderOptions(size="source").size is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"formats": "gif"}, "formats"),
        ({"formats": []}, "formats"),
        ({"size": "huge"}, "size"),
        ({"size": "1081p"}, "size"),
        ({"size": "x" * 10_000}, "size"),
        ({"white_balance": "warm"}, "white_balance"),
        ({"white_balance": "900K"}, "white_balance"),  # outside the locus the render knows
        ({"preset": "warp"}, "preset"),
        ({"brackets": "1"}, "brackets"),
        ({"brackets": "three"}, "brackets"),
        ({"focus_stack": 1}, "focus_stack"),
        ({"fps": 0}, "fps"),
        ({"fps": float("inf")}, "fps"),
        ({"crf": 99}, "crf"),
        ({"frames_format": "gif"}, "frames_format"),
        ({"stabilise": "off"}, "stabilise"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values: dict[str, object], field: str) -> None:
    assert field_errors(RenderOptions, **values) == {field}


@pytest.mark.parametrize("size", ["16384x16384", "8192x8192", "8640p", "7680x4322"])
def test_the_api_narrows_sizes_to_8k(size: str) -> None:
    assert RenderOptions(size=size).size is not None  # the command line may
    assert field_errors(ApiRenderOptions, size=size) == {"size"}


def test_the_api_narrows_counts_kelvin_and_refuses_server_paths(tmp_path: Path) -> None:
    assert ApiRenderOptions(size="4320p").size == OutputSize(4320)  # 7680x4320 exactly
    assert MAX_RENDER_PIXELS == 7680 * 4320
    profile = tmp_path / "lens.yaml"
    wide = {"brackets": 10, "focus_stack": 33, "white_balance": "20000K", "lens_profile": profile}
    assert RenderOptions(**wide).lens_profile == profile
    for name, value in wide.items():
        assert field_errors(ApiRenderOptions, **{name: value}) == {name}
    # the API's options are render options: a job re-reads them as such
    api = ApiRenderOptions(formats=["h264"], size="720p", white_balance="5600K", brackets=9)
    assert RenderOptions.model_validate(api.model_dump(mode="json")).size == OutputSize(720)


def test_outputs_take_their_own_sizes() -> None:
    options = RenderOptions(formats="H265@4k, h264@720p,frames@1920x1080,hlg")
    assert options.formats == (
        OutputSpec("h265", OutputSize(2160)),
        OutputSpec("h264", OutputSize(720)),
        OutputSpec("frames", OutputSize(1080, 1920)),
        OutputSpec("hlg"),
    )
    text = options.model_dump(mode="json")["formats"]
    assert text == ["h265@2160p", "h264@720p", "frames@1920x1080", "hlg"]
    assert RenderOptions.model_validate({"formats": text}) == options
    assert len(RenderOptions(formats="h264@720p,h264@720p").formats) == 1  # said twice: once
    for bad in ("h265@", "h265@huge", "gif@720p", "h264@hd,h264@720p"):
        assert field_errors(RenderOptions, formats=bad) == {"formats"}, bad
    assert field_errors(ApiRenderOptions, formats="h265@8640p") == {"formats"}
    assert RenderOptions(formats="h265@8640p").formats[0].size == OutputSize(8640)
    assert ApiRenderOptions(formats=["h265@4320p", "hlg@2160p"]).formats[1].format == "hlg"


def test_automatic_renders_take_their_options_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "skylapse.yaml"
    path.write_text("processing:\n  render:\n    formats: [h265@2160p, hlg]\n    crf: 20\n")
    render = load_config(path).processing.render
    assert [str(s) for s in render.formats] == ["h265@2160p", "hlg"] and render.crf == 20
    assert render.brackets == "capture"
    path.write_text("processing:\n  render:\n    formats: [h265@huge]\n")
    with pytest.raises(ConfigError, match=r"processing\.render\.formats"):
        load_config(path)
