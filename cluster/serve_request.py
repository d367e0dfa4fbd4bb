"""Parse and check a ``POST /v1/synthesize`` request, with no Ray or web framework in it.

Every problem raises ``RequestError`` with an HTTP status and a message that names the
field: 400 malformed (bad base64, not an image, bad JSON), 413 too many bytes or pixels,
415 a disallowed content type or image format, 422 well-formed but wrong (unknown
category or defect type, n or seed out of range, mask of the wrong size, unknown field).
Image headers are read before any pixel is decoded, so a decompression bomb is refused
for its declared size without being expanded.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from actors.knowledge_files import load_knowledge
from cluster.knowledge_check import add_hint
from rollout.data.images import image_to_gray8, image_to_rgb

FIELDS = ("image", "category", "defect_type", "n", "seed", "mask")
MAX_SEED = 2**31 - 1


@dataclass
class RequestLimits:
    max_bytes: int = 8_000_000  # whole request body
    max_pixels: int = 2048 * 2048
    min_side: int = 16
    max_n: int = 4
    formats: List[str] = field(default_factory=lambda: ["PNG", "JPEG"])
    knowledge: List[str] = field(default_factory=list)  # tools.knowledge.extra: the pairs a request may name, with the shipped ones


class RequestError(ValueError):
    def __init__(self, status: int, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def to_dict(self) -> Dict[str, Any]:
        return {"error": self.message, "field": self.field}


@dataclass
class SynthesizeRequest:
    image: np.ndarray  # HxWx3 uint8
    category: str
    defect_type: str
    n: int = 1
    seed: int = 0
    region: Optional[Tuple[float, float, float, float]] = None  # normalized bbox of the mask, if given


def decode_base64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(422, f"{name} must be a base64 string, got {type(value).__name__}", name)
    if value.startswith("data:") and "," in value:  # data URL
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{name} is not valid base64: {e}", name) from None


def decode_image(data: bytes, name: str, limits: RequestLimits, mode: str = "RGB") -> np.ndarray:
    if not data:
        raise RequestError(400, f"{name} is empty", name)
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # PIL's own guard, far above our limit
        raise RequestError(413, f"{name} declares too many pixels ({e})"[:300], name) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError(400, f"{name} is not an image ({type(e).__name__})", name) from None
    if im.format not in limits.formats:
        raise RequestError(415, f"{name} format {im.format} is not allowed (allowed: {', '.join(limits.formats)})", name)
    w, h = im.size
    if w * h > limits.max_pixels:
        raise RequestError(413, f"{name} has {w}x{h} = {w * h} pixels, more than the limit {limits.max_pixels}", name)
    if min(w, h) < limits.min_side:
        raise RequestError(422, f"{name} is {w}x{h}; each side must be at least {limits.min_side} pixels", name)
    try:
        return image_to_rgb(im) if mode == "RGB" else image_to_gray8(im)  # 16-bit: scaled, not clipped
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(400, f"{name} could not be decoded ({type(e).__name__}: {e})"[:300], name) from None


def _int(value: Any, name: str, lo: int, hi: int, from_form: bool) -> int:
    if from_form and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise RequestError(422, f"{name} must be an integer, got {value!r}", name) from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(422, f"{name} must be an integer, got {type(value).__name__}", name)
    if not lo <= value <= hi:
        raise RequestError(422, f"{name}={value} is out of range [{lo}, {hi}]", name)
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RequestError(422, f"{name} must be a non-empty string", name)
    return value


def mask_region(mask: np.ndarray) -> Tuple[float, float, float, float]:
    """Normalized (x0, y0, x1, y1) bounding box of the mask's nonzero pixels."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (float(xs.min()) / w, float(ys.min()) / h, float(xs.max() + 1) / w, float(ys.max() + 1) / h)


def check_fields(fields: Mapping[str, Any], image: bytes, mask: Optional[bytes], limits: RequestLimits,
                 from_form: bool = False) -> SynthesizeRequest:
    """The request from its fields and raw image bytes (JSON after base64, or multipart)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(FIELDS)})", unknown[0])
    for required in ("category", "defect_type"):
        if required not in fields:
            raise RequestError(422, f"missing field: {required}", required)
    category, defect = _text(fields["category"], "category"), _text(fields["defect_type"], "defect_type")
    kb = load_knowledge(tuple(limits.knowledge))
    if category not in kb.categories():
        raise RequestError(422, f"unknown category {category!r}; the knowledge base holds {len(kb.categories())} "
                                f"categories, e.g. {', '.join(kb.categories()[:4])}; {add_hint(category, defect)}",
                           "category")
    if not kb.has(category, defect):
        raise RequestError(422, f"unknown defect type {defect!r} for {category!r}; known: "
                                f"{', '.join(kb.defects(category))}; {add_hint(category, defect)}", "defect_type")
    n = _int(fields.get("n", 1), "n", 1, limits.max_n, from_form)
    seed = _int(fields.get("seed", 0), "seed", 0, MAX_SEED, from_form)
    pixels = decode_image(image, "image", limits)
    region = None
    if mask is not None:
        m = decode_image(mask, "mask", limits, mode="L")
        if m.shape != pixels.shape[:2]:
            raise RequestError(422, f"mask is {m.shape[1]}x{m.shape[0]} but the image is "
                                    f"{pixels.shape[1]}x{pixels.shape[0]}", "mask")
        if not (m > 0).any():
            raise RequestError(422, "mask is empty: mark where the defect may go", "mask")
        region = mask_region(m > 0)
    return SynthesizeRequest(pixels, category, defect, n, seed, region)


def parse_json(body: bytes, limits: RequestLimits) -> SynthesizeRequest:
    if len(body) > limits.max_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes, more than the limit {limits.max_bytes}")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object, got {type(payload).__name__}")
    if "image" not in payload:
        raise RequestError(422, "missing field: image", "image")
    image = decode_base64(payload["image"], "image")
    mask = decode_base64(payload["mask"], "mask") if payload.get("mask") is not None else None
    return check_fields(payload, image, mask, limits)
