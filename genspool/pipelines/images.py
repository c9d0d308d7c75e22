"""Image steps: an image (a path or a Files API id) through a list of Pillow operations.

Operations are written as a YAML user would, one key each::

    image:
      input: "{{item.path}}"
      ops:
        - resize: {width: 512, height: 512, fit: cover}
        - denoise: {size: 3}
        - sharpen: {radius: 2, percent: 150, threshold: 3}
        - autocontrast: {}
        - grayscale: {}
        - convert: {format: webp, quality: 85}
      to: out/thumbs

:func:`apply_ops` is synchronous, pure bytes in and bytes out (the runner calls it in a
thread): the EXIF orientation is applied first, so a phone photo is upright before it is cut,
and the output keeps the input's format unless a ``convert`` says otherwise. An image Pillow
cannot read, or one too large to decode safely, is an :class:`ImageError` saying so.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, Tag, model_validator

from genspool.pipelines._kinds import by_kind
from genspool.pipelines.sinks import write_atomic
from genspool.pipelines.sources import OpenFile, SourceError, closing, open_bytes

__all__ = [
    "AutocontrastOp",
    "ConvertOp",
    "DenoiseOp",
    "GrayscaleOp",
    "ImageError",
    "ImageOut",
    "ImageSpec",
    "ImageStep",
    "Op",
    "ResizeOp",
    "SharpenOp",
    "apply_ops",
    "read_input",
    "save_to",
]

_MEDIA_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXTENSIONS: Final = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif"}
#: What Pillow saves for an input format it can read but not write (or does not name).
_FALLBACK: Final = "png"
#: The largest input read: well above a camera's photo, well below what would hurt a worker.
MAX_INPUT_BYTES: Final = 64 * 1024 * 1024


class ImageError(ValueError):
    """An image that cannot be read or processed; the message says what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResizeArgs(_Strict):
    width: int | None = Field(None, ge=1, le=16384, description="Pixels.")
    height: int | None = Field(None, ge=1, le=16384, description="Pixels.")
    fit: Literal["contain", "cover", "exact"] = Field(
        "contain",
        description="contain: fit inside the box; cover: fill it, cropping the centre; "
        "exact: stretch to it. Give one side only to keep the aspect ratio.",
    )

    @model_validator(mode="after")
    def _a_side(self) -> ResizeArgs:
        if self.width is None and self.height is None:
            raise ValueError("resize needs a width, a height or both")
        return self


class DenoiseArgs(_Strict):
    size: int = Field(3, ge=3, le=9, description="The median filter's window (odd).")

    @model_validator(mode="after")
    def _odd(self) -> DenoiseArgs:
        if self.size % 2 == 0:
            raise ValueError(f"denoise size must be odd (3, 5, 7 or 9), not {self.size}")
        return self


class SharpenArgs(_Strict):
    radius: float = Field(2.0, gt=0, le=50, description="Blur radius of the unsharp mask.")
    percent: int = Field(150, ge=0, le=1000, description="Strength.")
    threshold: int = Field(3, ge=0, le=255, description="Least brightness change sharpened.")


class AutocontrastArgs(_Strict):
    cutoff: float = Field(0.0, ge=0, lt=50, description="Percent of darkest/lightest cut off.")


class GrayscaleArgs(_Strict):
    pass


class ConvertArgs(_Strict):
    format: Literal["png", "jpeg", "webp"] = Field(description="The output format.")
    quality: int = Field(85, ge=1, le=100, description="For jpeg and webp.")


class ResizeOp(_Strict):
    kind: ClassVar[str] = "resize"
    resize: ResizeArgs


class DenoiseOp(_Strict):
    kind: ClassVar[str] = "denoise"
    denoise: DenoiseArgs = Field(default_factory=DenoiseArgs)


class SharpenOp(_Strict):
    kind: ClassVar[str] = "sharpen"
    sharpen: SharpenArgs = Field(default_factory=SharpenArgs)


class AutocontrastOp(_Strict):
    kind: ClassVar[str] = "autocontrast"
    autocontrast: AutocontrastArgs = Field(default_factory=AutocontrastArgs)


class GrayscaleOp(_Strict):
    kind: ClassVar[str] = "grayscale"
    grayscale: GrayscaleArgs = Field(default_factory=GrayscaleArgs)


class ConvertOp(_Strict):
    kind: ClassVar[str] = "convert"
    convert: ConvertArgs


Op = Annotated[
    Annotated[ResizeOp, Tag("resize")]
    | Annotated[DenoiseOp, Tag("denoise")]
    | Annotated[SharpenOp, Tag("sharpen")]
    | Annotated[AutocontrastOp, Tag("autocontrast")]
    | Annotated[GrayscaleOp, Tag("grayscale")]
    | Annotated[ConvertOp, Tag("convert")],
    by_kind("an image op", "resize", "denoise", "sharpen", "autocontrast", "grayscale", "convert"),
]


class ImageSpec(_Strict):
    input: str = Field(min_length=1, description="A path, or a Files API id.")
    ops: list[Op] = Field(min_length=1, description="Applied in order.")
    to: str | None = Field(
        None, description="A directory to write into too: same file name, new extension."
    )


class ImageStep(_Strict):
    kind: ClassVar[str] = "image"
    image: ImageSpec


@dataclass(frozen=True, slots=True)
class ImageOut:
    data: bytes
    media_type: str
    width: int
    height: int
    format: str  # png, jpeg, webp, or the input's own (e.g. gif)


def apply_ops(data: bytes, ops: list[Op]) -> ImageOut:
    """``data`` (an encoded image) with ``ops`` applied, encoded again."""
    image, fmt = _open(data)
    quality = 85
    for op in ops:
        if isinstance(op, ConvertOp):
            fmt, quality = op.convert.format, op.convert.quality
        else:
            image = _apply(image, op)
    return _encode(image, fmt, quality)


def _open(data: bytes) -> tuple[Image.Image, str]:
    """The decoded image, upright, and its format (lowercase)."""
    fmt = "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = (image.format or _FALLBACK).lower()
            image.load()
    except UnidentifiedImageError:
        raise ImageError(f"not an image Pillow can read ({len(data)} bytes)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the {fmt} image is truncated or corrupt: {exc}") from None
    return _normalized(ImageOps.exif_transpose(image)), fmt


def _normalized(image: Image.Image) -> Image.Image:
    """The image in a mode every filter takes: L, LA, RGB or RGBA."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    has_alpha = "transparency" in image.info or image.mode in ("PA", "La", "RGBa")
    return image.convert("RGBA" if has_alpha else "RGB")


def _apply(image: Image.Image, op: Op) -> Image.Image:
    if isinstance(op, ResizeOp):
        return _resize(image, op.resize)
    if isinstance(op, DenoiseOp):
        return image.filter(ImageFilter.MedianFilter(op.denoise.size))
    if isinstance(op, SharpenOp):
        s = op.sharpen
        return image.filter(ImageFilter.UnsharpMask(s.radius, s.percent, s.threshold))
    if isinstance(op, AutocontrastOp):
        return _autocontrast(image, op.autocontrast.cutoff)
    return image.convert("LA" if image.mode in ("LA", "RGBA") else "L")  # grayscale


def _resize(image: Image.Image, args: ResizeArgs) -> Image.Image:
    width, height = _box(image.size, args.width, args.height)
    if args.width is None or args.height is None or args.fit == "exact":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if args.fit == "cover":
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    return ImageOps.contain(image, (width, height), Image.Resampling.LANCZOS)


def _box(size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """The target size; a side not given follows the aspect ratio."""
    w, h = size
    if width is None:
        assert height is not None
        return max(1, round(w * height / h)), height
    if height is None:
        return width, max(1, round(h * width / w))
    return width, height


def _autocontrast(image: Image.Image, cutoff: float) -> Image.Image:
    """Autocontrast of the colour bands; an alpha band is kept as it is."""
    if image.mode not in ("LA", "RGBA"):
        return ImageOps.autocontrast(image, cutoff=cutoff)
    *colour, alpha = image.split()
    base = Image.merge(image.mode[:-1], colour)
    stretched = ImageOps.autocontrast(base, cutoff=cutoff)
    return Image.merge(image.mode, [*stretched.split(), alpha])


def _encode(image: Image.Image, fmt: str, quality: int) -> ImageOut:
    if fmt == "jpeg" and image.mode in ("LA", "RGBA"):
        image = _flattened(image)  # JPEG has no alpha: composite on white
    options: dict[str, Any] = {"quality": quality} if fmt in ("jpeg", "webp") else {}
    out = io.BytesIO()
    try:
        image.save(out, format=fmt.upper(), **options)
    except (KeyError, OSError):  # a format Pillow reads but cannot write
        fmt, out = _FALLBACK, io.BytesIO()
        image.save(out, format="PNG")
    media_type = _MEDIA_TYPES.get(fmt) or Image.MIME.get(fmt.upper(), "application/octet-stream")
    return ImageOut(out.getvalue(), media_type, image.width, image.height, fmt)


def _flattened(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


async def read_input(
    ref: str, *, base: Path, open_file: OpenFile | None, max_bytes: int = MAX_INPUT_BYTES
) -> bytes:
    """The bytes of an image step's ``input`` (a path or a Files API id), at most
    ``max_bytes``; a missing file is an :class:`ImageError`."""
    try:
        chunks = await open_bytes(ref, base=base, open_file=open_file)
    except SourceError as exc:
        raise ImageError(str(exc)) from None
    parts, size = [], 0
    async with closing(chunks):
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise ImageError(f"{ref}: over the {max_bytes}-byte limit of an image")
            parts.append(chunk)
    return b"".join(parts)


def save_to(directory: Path, name: str, out: ImageOut) -> Path:
    """Write ``out`` into ``directory`` as ``name`` with the extension of its format,
    through a temporary file and a rename (a reader never sees half an image)."""
    target = directory / (Path(name).stem + _EXTENSIONS.get(out.format, f".{out.format}"))
    write_atomic(target, io.BytesIO(out.data))
    return target
