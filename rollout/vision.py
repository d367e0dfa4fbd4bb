"""What a vision-language policy sees: images inside its prompt and observations.

Qwen2.5-VL reads an image as ``<|vision_start|>`` + one ``<|image_pad|>`` per merged patch +
``<|vision_end|>``; the model swaps the pads for the vision encoder's outputs. We expand the
pads here, with the processor's own patch arithmetic, so the episode's token ids are final
when they are generated — the rollout never re-tokenizes — and the images travel beside
them, in order, to the LLM server (``image_data``) and into the stored episode.

A text policy (no processor) sees the same episode without the image placeholders.
"""
from __future__ import annotations

from typing import List

import numpy as np
from PIL import Image

from rollout.format import IMAGE_PAD, VISION_END, VISION_START


def is_vision_language(model_path: str) -> bool:
    import json
    from pathlib import Path

    config = Path(model_path) / "config.json"
    return config.is_file() and "vision_config" in json.loads(config.read_text())


def processor_for(model_path: str):
    """The VL policy's processor, or None for a text policy."""
    if not is_vision_language(model_path):
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_path)


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


class VisionRenderer:
    def __init__(self, processor):
        self.image_processor = processor.image_processor
        self.merge = int(getattr(self.image_processor, "merge_size", 2))

    def image_tokens(self, image: np.ndarray) -> int:
        """How many ``<|image_pad|>`` tokens the model expects for ``image``."""
        grid = self.image_processor(images=[to_pil(image)], return_tensors="pt")["image_grid_thw"][0]
        return int(grid.prod()) // (self.merge ** 2)

    def placeholder(self, image: np.ndarray) -> str:
        return VISION_START + IMAGE_PAD * self.image_tokens(image) + VISION_END

    @staticmethod
    def image_data(images: List[np.ndarray], shown: List[int]) -> List[Image.Image]:
        """The images of the token stream, in the order their placeholders appear."""
        return [to_pil(images[i]) for i in shown]
