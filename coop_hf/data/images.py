"""Decoding any image input to an RGB ``PIL.Image``, with errors that name the file."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

ImageInput = Image.Image | str | os.PathLike | dict[str, Any]
"""A PIL image, a file path, or a ``datasets`` image dict ``{"path": ..., "bytes": ...}``."""

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES = frozenset({"I", "F"})


class UnreadableImageError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def _describe_source(image: ImageInput) -> str:
    """A human-readable name for an image input: its file path where it has one."""
    if isinstance(image, dict):
        if image.get("path"):
            return str(image["path"])
        return "<image bytes without a file path>"
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or "<in-memory PIL image>"
    return os.fspath(image)


def _open(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return Image.open(io.BytesIO(image["bytes"]))
        if not image.get("path"):
            raise ValueError("image dict has neither 'bytes' nor 'path'")
        return Image.open(image["path"])
    return Image.open(image)


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grayscale to 8-bit ``L``, scaling the 16-bit range to 0..255."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or array.max(initial=0) > 255:
        array = array / 257.0
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES or image.mode.startswith("I;16"):
        image = _to_8bit_gray(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_rgb(image: ImageInput) -> Image.Image:
    """Fully decode ``image`` and return it as an 8-bit RGB ``PIL.Image``.

    Grayscale, CMYK, palette (with or without transparency), 16-bit and alpha images are converted; alpha is
    composited on white. A corrupt or truncated file raises ``UnreadableImageError`` naming the file.
    """
    try:
        opened = _open(image)
        opened.load()
        return _to_rgb(opened)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(f"Cannot read image {_describe_source(image)}: {err}") from err
