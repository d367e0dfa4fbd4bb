"""A corpus of malformed ``/v1/synthesize`` requests, each with the 4xx it must get and a
word its message must contain. Used by the Serve tests and the reliability suite."""
from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` with a tiny compressed body: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 4096, 9)  # far fewer rows than declared; all zeros compress to nothing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def corpus(image: np.ndarray) -> List[Tuple[str, Dict[str, Any], int, str]]:
    """(name, httpx.post keyword arguments, expected status, word in the message)."""
    png = encode(image)
    good = {"image": b64(png), "category": "syn_pill", "defect_type": "crack", "n": 1, "seed": 0}
    h, w = image.shape[:2]
    return [
        ("truncated base64", {"json": {**good, "image": good["image"][:-7]}}, 400, "base64"),
        ("base64 of text", {"json": {**good, "image": b64(b"hello, not an image")}}, 400, "not an image"),
        ("truncated png", {"json": {**good, "image": b64(png[: len(png) // 2])}}, 400, "image"),
        ("gif not allowed", {"json": {**good, "image": b64(encode(image, "GIF"))}}, 415, "GIF"),
        ("bmp not allowed", {"json": {**good, "image": b64(encode(image, "BMP"))}}, 415, "BMP"),
        ("decompression bomb", {"json": {**good, "image": b64(png_header_only(30000, 30000))}}, 413, "pixels"),
        ("zero-pixel image", {"json": {**good, "image": b64(png_header_only(0, 0))}}, 400, "image"),
        ("tiny image", {"json": {**good, "image": b64(encode(image[:4, :4]))}}, 422, "at least"),
        ("huge body", {"content": b'{"image": "' + b"A" * 9_000_000 + b'"}',
                       "headers": {"content-type": "application/json"}}, 413, "bytes"),
        ("unknown category", {"json": {**good, "category": "spaceship"}}, 422, "category"),
        ("unknown defect type", {"json": {**good, "defect_type": "broken_large"}}, 422, "defect type"),
        ("n too large", {"json": {**good, "n": 99}}, 422, "n=99"),
        ("n zero", {"json": {**good, "n": 0}}, 422, "n=0"),
        ("seed negative", {"json": {**good, "seed": -1}}, 422, "seed"),
        ("n is a string", {"json": {**good, "n": "2"}}, 422, "integer"),
        ("n is a bool", {"json": {**good, "n": True}}, 422, "integer"),
        ("category is a number", {"json": {**good, "category": 7}}, 422, "string"),
        ("image is a number", {"json": {**good, "image": 12}}, 422, "base64"),
        ("unknown field", {"json": {**good, "colour": "red"}}, 422, "colour"),
        ("missing category", {"json": {k: v for k, v in good.items() if k != "category"}}, 422, "category"),
        ("missing image", {"json": {k: v for k, v in good.items() if k != "image"}}, 422, "image"),
        ("body is a list", {"json": [good]}, 422, "object"),
        ("not json", {"content": b"{image: nope", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ("text/plain", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        ("no content type", {"content": b"hello"}, 415, "content type"),
        ("mask wrong size", {"json": {**good, "mask": b64(encode(np.full((h // 2, w // 2), 255, np.uint8)))}},
         422, "mask"),
        ("mask empty", {"json": {**good, "mask": b64(encode(np.zeros((h, w), np.uint8)))}}, 422, "empty"),
        ("multipart without image", {"data": {"category": "syn_pill", "defect_type": "crack"},
                                     "files": {"other": ("x.txt", b"x", "text/plain")}}, 422, "image"),
        ("multipart n not a number", {"data": {"category": "syn_pill", "defect_type": "crack", "n": "two"},
                                      "files": {"image": ("a.png", png, "image/png")}}, 422, "integer"),
    ]
