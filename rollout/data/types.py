"""What every dataset loader returns, and the one error type they raise."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Tuple

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"


class DatasetError(ValueError):
    """The dataset on disk is not what the loader expects; the message says what and where."""


@dataclass(frozen=True)
class Sample:
    """One image of a dataset. ``masks`` is empty for a normal image."""

    image: Path
    category: str
    defect: str  # "good" for normal images
    split: str  # train | validation | test
    masks: Tuple[Path, ...] = ()

    @property
    def is_anomaly(self) -> bool:
        return self.defect != GOOD


def number_key(path: Path) -> Tuple[int, str]:
    """Sort key by the number in the file name (``7.png`` before ``10.png``), then by name."""
    m = re.search(r"\d+", path.stem)
    return (int(m.group()) if m else 1 << 62, path.name)


def list_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=number_key)


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) from the file header, without decoding pixels."""
    with Image.open(path) as im:
        return im.size


def check_masks(samples: Iterable[Sample]) -> None:
    """Every anomaly has its masks on disk, each the size of its image."""
    for s in samples:
        if not s.is_anomaly:
            continue
        if not s.masks:
            raise DatasetError(f"missing mask for anomaly image {s.image}")
        size = image_size(s.image)
        for m in s.masks:
            if not m.is_file():
                raise DatasetError(f"missing mask for {s.image}: expected {m}")
            msize = image_size(m)
            if msize != size:
                raise DatasetError(
                    f"mask {m} is {msize[0]}x{msize[1]} but image {s.image} is {size[0]}x{size[1]}"
                )


def require_root(root: Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{what} root not found: {root}")
    return root


def unknown_category(name: str, root: Path, available: List[str]) -> DatasetError:
    return DatasetError(
        f"unknown category {name!r} under {root}; available: {', '.join(available) or '(none)'}"
    )
