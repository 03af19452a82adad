"""Render options: the one definition of what a render can be told.

`RenderOptions` is what `skylapse render`'s flags, a render job's parameters, the processing
API's ``POST /jobs`` body and the configuration's ``processing.render`` section all are. It is
validated once, where the options come in, into parsed values the render reads as they are:

* ``formats``: a tuple of `OutputSpec` (one per output, each ``FORMAT[@SIZE]``; the JSON and
  the command line take the text, ``["h265@2160p", "h264@720p"]`` or ``"h265@2160p,h264@720p"``);
* ``size``: an `OutputSize` (``"1080p"``: that height at the source's aspect; ``"1920x1080"``:
  exactly), or None for the source's size: the size of every output that names none;
* ``brackets``: which frames are fused into one shot (see `BracketMode`);
* ``white_balance``: a `WhiteBalance` (``"gray-world"`` or a colour temperature ``"5600K"``),
  or None to leave the colours as shot.

``model_dump(mode="json")`` gives the text forms back, so a job's stored options and the API's
answers read as they were written. Limits that depend on who asks live in `RenderLimits`: a
subclass narrows them by setting ``limits`` (`ApiRenderOptions`: renders up to 8K UHD, no
server paths), and a value beyond them is refused naming its field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

OutputFormat = Literal["h265", "h264", "frames", "hlg"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
StabilizeMode = Literal["tripod", "smooth", "off"]
DenoiseMode = Literal["temporal", "spatial", "off"]
FramesFormat = Literal["png", "jpg"]

#: What every render writes unless told otherwise: H.265 to keep and an H.264 preview that
#: every browser plays (the dashboard's gallery). The command line, jobs, the API and the
#: configuration all take their default from here.
DEFAULT_FORMATS: tuple[OutputFormat, ...] = ("h265", "h264")
#: How frames are grouped into shots. ``"capture"``: the bracket sets the capture service
#: recorded in each frame's EXIF (its ``bracket`` record) are fused, every other frame is a shot
#: of its own (a folder without such records renders frame by frame); ``"auto"``: the capture's
#: record, else the repeating EV pattern of the EXIF exposures; ``N``: runs of N frames; None
#: (``"off"`` on the command line): every frame on its own.
BracketMode = int | Literal["auto", "capture"] | None
#: Bracket sets fused by default: the capture's own record of them.
DEFAULT_BRACKETS: BracketMode = "capture"
#: At most this many outputs from one render (each an encoder fed from the same pass).
MAX_OUTPUTS = 8

#: The x264 and x265 presets, fastest first.
PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
#: Colour temperatures the white balance can undo: where the Planckian-locus approximation of
#: `skylapse.processing.colour` holds (Kim et al., valid 1667-25000 K).
KELVIN_RANGE = (1667.0, 25000.0)
#: Longer text is never a valid size or white balance; refused before it is parsed.
_MAX_TEXT = 32

_T = TypeVar("_T")

_SIZE_ALIASES = {"4k": "2160p", "uhd": "2160p", "fhd": "1080p", "hd": "720p"}
_HEIGHT_RE = re.compile(r"^(\d+)p$")
_WXH_RE = re.compile(r"^(\d+)\s*[x×]\s*(\d+)$")


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what} as text, got {type(value).__name__}")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"{value[:_MAX_TEXT]!r}... is too long to be {what}")
    return value.strip().lower()


@dataclass(frozen=True)
class OutputSize:
    """An output size: ``height`` at the source's aspect (``"1080p"``), or exactly
    ``width`` x ``height`` (``"1920x1080"``). Both are even, as the encoders need."""

    height: int
    width: int | None = None

    @classmethod
    def parse(cls, text: str) -> OutputSize | None:
        """``"<N>p"`` (aliases ``4k``/``uhd``, ``fhd``, ``hd``), ``"WxH"``, or ``"source"`` /
        ``""`` for the source's size (None). Raises ValueError naming the accepted forms."""
        spec = _text(text, "a size")
        if spec in ("", "source"):
            return None
        spec = _SIZE_ALIASES.get(spec, spec)
        if match := _HEIGHT_RE.match(spec):
            height = int(match.group(1))
            if height < 2 or height % 2:
                raise ValueError(f"output height must be even and at least 2, got {text!r}")
            return cls(height)
        if match := _WXH_RE.match(spec):
            width, height = int(match.group(1)), int(match.group(2))
            if width < 2 or height < 2 or width % 2 or height % 2:
                raise ValueError(f"output size must have even width and height, got {text!r}")
            return cls(height, width)
        raise ValueError(
            f"unrecognised size {text!r}: use '2160p', '1080p', '720p' (or any '<N>p'), "
            "'WIDTHxHEIGHT' such as '1920x1080', or leave it out for the source size"
        )

    def resolve(self, source_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` for a source of ``source_size``; a width from the aspect is
        rounded to the nearest even number."""
        if self.width is not None:
            return self.width, self.height
        src_w, src_h = source_size
        return _even(self.height * src_w / src_h), self.height

    def __str__(self) -> str:
        return f"{self.height}p" if self.width is None else f"{self.width}x{self.height}"


def output_size(size: OutputSize | None, source_size: tuple[int, int]) -> tuple[int, int]:
    """The ``(width, height)`` a render writes: ``size``, or (None) the source's rounded down
    to even numbers."""
    src_w, src_h = (int(v) for v in source_size)
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"invalid source size {source_size}")
    if size is None:
        return max(2, src_w - src_w % 2), max(2, src_h - src_h % 2)
    return size.resolve((src_w, src_h))


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


@dataclass(frozen=True)
class OutputSpec:
    """One output of a render, written ``FORMAT`` or ``FORMAT@SIZE`` (``"h264@720p"``).

    One spec per file or folder the render writes from its single pass. ``size`` None: the
    render's ``size`` (itself None: the source's).
    """

    format: OutputFormat
    size: OutputSize | None = None

    @classmethod
    def parse(cls, text: str) -> OutputSpec:
        spec = _text(text, "an output")
        name, at, size_text = spec.partition("@")
        name = name.strip()
        if name not in OUTPUT_FORMATS:
            raise ValueError(
                f"{text!r}: {name!r} is not one of {', '.join(OUTPUT_FORMATS)} "
                "(FORMAT or FORMAT@SIZE, e.g. h264@720p)"
            )
        if at and size_text.strip() in ("", "source"):
            raise ValueError(f"{text!r}: name a size after '@' (2160p, 1080p, 720p or WxH)")
        return cls(name, OutputSize.parse(size_text) if at else None)

    def __str__(self) -> str:
        return self.format if self.size is None else f"{self.format}@{self.size}"


@dataclass(frozen=True)
class WhiteBalance:
    """One white balance for a whole sequence: gray world (``kelvin`` None, written
    ``"gray-world"``), or the colour temperature the frames were lit by (``"5600K"``)."""

    kelvin: float | None = None

    @classmethod
    def parse(cls, text: str) -> WhiteBalance:
        value = _text(text, "a white balance")
        if value.replace("_", "-") in ("gray-world", "grey-world"):
            return cls()
        try:
            kelvin = float(value.removesuffix("k"))
        except ValueError:
            raise ValueError(
                f"expected gray-world or a colour temperature such as 5600K, got {text!r}"
            ) from None
        return cls(kelvin)

    @property
    def gray_world(self) -> bool:
        return self.kelvin is None

    def __str__(self) -> str:
        return "gray-world" if self.kelvin is None else f"{self.kelvin:g}K"


def _parser(kind: type[_T]) -> Callable[[object], _T]:
    """Pydantic validation of a value parsed from its text (an instance passes as it is)."""

    def validate(value: object) -> _T:
        return value if isinstance(value, kind) else kind.parse(value)  # type: ignore[attr-defined]

    return validate


def _as_text(description: str, *examples: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "description": description, "examples": examples})


_TEXT = PlainSerializer(str, return_type=str)  # written back as the text it was parsed from
OutputSpecField = Annotated[
    OutputSpec,
    PlainValidator(_parser(OutputSpec)),
    _TEXT,
    _as_text("an output: FORMAT or FORMAT@SIZE", *OUTPUT_FORMATS, "h264@720p"),
]
OutputSizeField = Annotated[
    OutputSize,
    PlainValidator(_parser(OutputSize)),
    _TEXT,
    _as_text("2160p, 1080p, 720p (height at the source's aspect) or WxH", "1080p", "1920x1080"),
]
WhiteBalanceField = Annotated[
    WhiteBalance,
    PlainValidator(_parser(WhiteBalance)),
    _TEXT,
    _as_text("gray-world, or the colour temperature the frames were lit by", "5600K"),
]


@dataclass(frozen=True)
class RenderLimits:
    """How far a caller may push a render; None: no limit beyond the option's own."""

    max_side: int | None = None
    max_pixels: int | None = None
    max_brackets: int | None = None
    max_focus_stack: int | None = None
    kelvin: tuple[float, float] = KELVIN_RANGE
    lens_profile: bool = True  # whether a lens profile (a path on this machine) may be named

    def check_size(self, size: OutputSize) -> None:
        # "<N>p" is checked as for a 16:9 source, the widest a station's sensor gives
        width, height = size.resolve((16, 9))
        too_wide = self.max_side is not None and max(width, height) > self.max_side
        too_many = self.max_pixels is not None and width * height > self.max_pixels
        if too_wide or too_many:
            raise ValueError(
                f"{width}x{height} is larger than renders may be: at most "
                f"{self.max_side} px a side and {self.max_pixels} pixels"
            )


def _split_formats(value: object) -> object:
    """``"h265,h264@720p"`` or ``["h265", "h264,frames"]`` to the specs' texts, once each, in
    order."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return value
    names: list[object] = []
    for item in value:
        parts = item.split(",") if isinstance(item, str) else [item]
        for part in parts:
            name = part.strip().lower() if isinstance(part, str) else part
            if name != "" and name not in names:
                names.append(name)
    return names


class RenderOptions(BaseModel):
    """Everything a render can be told; the defaults are the recommended render.

    The names are `skylapse render`'s flags (``formats`` is ``--format``). Frozen: validated
    once, then only read.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Narrowed by a subclass (the API's); checked by the validators below.
    limits: ClassVar[RenderLimits] = RenderLimits()

    formats: tuple[OutputSpecField, ...] = Field(
        DEFAULT_FORMATS,  # the names, parsed like any given value (validate_default)
        validate_default=True,
        min_length=1,
        max_length=MAX_OUTPUTS,
    )
    size: OutputSizeField | None = None
    fps: float = Field(24.0, gt=0, le=240)
    crf: int | None = Field(None, ge=0, le=51, description="default 28 for H.265, 23 for H.264")
    preset: str = Field("medium", description="x264/x265 preset, ultrafast .. placebo")
    deflicker: bool = True
    stabilize: StabilizeMode = "tripod"
    denoise: DenoiseMode = "temporal"
    white_balance: WhiteBalanceField | None = None
    contrast: float = Field(1.0, gt=0, le=4)
    saturation: float = Field(1.0, ge=0, le=4)
    lens_profile: Path | None = None
    brackets: Annotated[int, Field(ge=2)] | Literal["auto", "capture"] | None = DEFAULT_BRACKETS
    focus_stack: int | None = Field(None, ge=2)
    frames_format: FramesFormat = "png"
    keogram: bool = True
    contact_sheet: bool = True

    @property
    def format_names(self) -> frozenset[OutputFormat]:
        return frozenset(spec.format for spec in self.formats)

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: object) -> object:
        return _split_formats(value)

    @field_validator("formats")
    @classmethod
    def _format_sizes(cls, value: tuple[OutputSpec, ...]) -> tuple[OutputSpec, ...]:
        seen: set[OutputSpec] = set()
        for spec in value:
            if spec in seen:
                raise ValueError(f"{spec} is asked for twice")
            seen.add(spec)
            if spec.size is not None:
                cls.limits.check_size(spec.size)
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: OutputSize | None) -> OutputSize | None:
        if value is not None:
            cls.limits.check_size(value)
        return value

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"expected one of {', '.join(PRESETS)}")
        return value

    @field_validator("white_balance")
    @classmethod
    def _white_balance(cls, value: WhiteBalance | None) -> WhiteBalance | None:
        lo, hi = cls.limits.kelvin
        if value is not None and value.kelvin is not None and not lo <= value.kelvin <= hi:
            raise ValueError(f"colour temperature must be {lo:g}..{hi:g} K")
        return value

    @field_validator("lens_profile")
    @classmethod
    def _lens_profile(cls, value: Path | None) -> Path | None:
        if value is not None and not cls.limits.lens_profile:
            raise ValueError("a lens profile cannot be chosen here")
        return value

    @field_validator("brackets", mode="before")
    @classmethod
    def _brackets(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("auto", "capture"):
                return text
            if text in ("off", "none"):
                return None
            value = int(text) if text.isdigit() else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(
                "expected 'capture' (the sets the capture recorded), 'auto', a bracket count "
                "of 2 or more, or 'off'"
            )
        top = cls.limits.max_brackets
        if top is not None and value > top:
            raise ValueError(f"at most {top} frames a bracket set")
        return value

    @field_validator("focus_stack")
    @classmethod
    def _focus_stack(cls, value: int | None) -> int | None:
        top = cls.limits.max_focus_stack
        if value is not None and top is not None and value > top:
            raise ValueError(f"at most {top} frames a focus stack")
        return value


#: The largest render the API accepts: 8K UHD's pixels, no side over 8192 px.
MAX_RENDER_SIDE = 8192
MAX_RENDER_PIXELS = 7680 * 4320
API_RENDER_LIMITS = RenderLimits(
    max_side=MAX_RENDER_SIDE,
    max_pixels=MAX_RENDER_PIXELS,
    max_brackets=9,
    max_focus_stack=32,
    kelvin=(KELVIN_RANGE[0], 15000.0),
    lens_profile=False,
)


class ApiRenderOptions(RenderOptions):
    """`RenderOptions` as the processing API accepts them (``POST /jobs``): the same fields and
    parsing, renders up to 8K UHD, bracket sets of up to 9 and focus stacks of up to 32 frames,
    1667..15000 K, and no lens profile (a path on the server)."""

    limits: ClassVar[RenderLimits] = API_RENDER_LIMITS
