"""MG — mask generation: the object's foreground (to place regions on the object) and the
anomaly mask of an edited image (the change between normal and edited image inside the
region).

``classical`` (CPU default): foreground by distance to the border colour, Otsu threshold
and morphology; a texture (whose border looks like its interior) is all foreground.
``sam``: segment-anything with a box prompt for the foreground, and SAM's mask of the
changed area intersected with the change mask. SAM is reached only through ``_predict``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from actors.defect_measure import CHANGE_LEVEL, change_map, changed_pixels
from actors.errors import ToolError
from actors.regions import box_mask
from actors.schema import check_image
from actors.tool import Tool, ToolRequest

SCHEMA = {
    "type": "object",
    "properties": {"image_index": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}
_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def classical_foreground(image: np.ndarray) -> np.ndarray:
    """HxW bool: where the object is (all True for a texture)."""
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    dist = np.linalg.norm(img - np.median(border, axis=0), axis=2)
    border_d = np.concatenate([dist[0], dist[-1], dist[:, 0], dist[:, -1]])
    if np.percentile(border_d, 90) > 0.5 * np.percentile(dist, 90) or dist.max() < 12:
        return np.ones(dist.shape, bool)
    d8 = np.clip(dist / max(dist.max(), 1e-6) * 255, 0, 255).astype(np.uint8)
    _, fg = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, _KERNEL)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, _KERNEL, iterations=2)
    frac = (fg > 0).mean()
    return np.ones(dist.shape, bool) if not 0.02 < frac < 0.98 else fg > 0


def change_mask(normal: np.ndarray, edited: np.ndarray, region: Optional[Tuple[int, int, int, int]],
                threshold: float = CHANGE_LEVEL / 255) -> np.ndarray:
    """HxW uint8 0/255: pixels whose colour changed by more than ``threshold`` of the range,
    cleaned as the judge cleans them (``changed_pixels``). A 3x3 opening used to erase
    1–2 px scratches entirely: MG returned an empty mask for a scratch the judge passed."""
    if normal.shape != edited.shape:
        raise ValueError(f"normal {normal.shape} and edited {edited.shape} differ in size")
    diff = change_map(normal, edited)
    if region is not None:
        diff = diff * box_mask(region, diff.shape)
    return changed_pixels(diff, threshold * 255).astype(np.uint8) * 255


class ClassicalMaskGen(Tool):
    name = "mask_gen"
    result_keys = {"mask": "array", "area": "number"}
    schema = SCHEMA
    required_images = ("normal", "edited")

    def __init__(self, change_threshold: float = CHANGE_LEVEL / 255):
        self.change_threshold = change_threshold

    def foreground(self, image: np.ndarray) -> np.ndarray:
        return classical_foreground(image)

    def anomaly_mask(self, normal: np.ndarray, edited: np.ndarray, region) -> np.ndarray:
        return change_mask(normal, edited, region, self.change_threshold)

    def run_one(self, req: ToolRequest) -> dict:
        normal = check_image(self.name, "normal", req.images.get("normal"))
        edited = check_image(self.name, "edited", req.images.get("edited"))
        if normal.shape != edited.shape:
            raise ToolError("invalid_arguments", f"edited image {edited.shape} differs from normal {normal.shape}",
                            "image_index", self.name)
        region = req.context.get("region_px")
        mask = self.anomaly_mask(normal, edited, tuple(region) if region is not None else None)
        return {"mask": mask, "area": round(float((mask > 0).mean()), 4)}


class SamMaskGen(ClassicalMaskGen):
    """segment-anything backend; ``model`` is a built ``Sam`` (tests: a tiny one)."""

    def __init__(self, checkpoint: Optional[str] = None, model_type: str = "vit_b", model=None,
                 change_threshold: float = CHANGE_LEVEL / 255, device: str = "cpu"):
        super().__init__(change_threshold)
        from segment_anything import SamPredictor, sam_model_registry

        if model is None:
            if not checkpoint:
                raise ValueError("the sam backend needs tools.mask_gen.checkpoint (a local segment-anything .pth)")
            model = sam_model_registry[model_type](checkpoint=checkpoint)
        self.predictor = SamPredictor(model.to(device).eval())

    def _predict(self, image: np.ndarray, box: Tuple[int, int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
        """(masks KxHxW bool, scores K) for a box prompt."""
        self.predictor.set_image(image)
        masks, scores, _ = self.predictor.predict(box=np.array(box, np.float32), multimask_output=True)
        return masks.astype(bool), scores

    def foreground(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        masks, scores = self._predict(image, (int(0.02 * w), int(0.02 * h), int(0.98 * w), int(0.98 * h)))
        best = masks[int(np.argmax(scores))]
        return best if 0.02 < best.mean() < 0.98 else classical_foreground(image)

    def anomaly_mask(self, normal: np.ndarray, edited: np.ndarray, region) -> np.ndarray:
        change = super().anomaly_mask(normal, edited, region) > 0
        if not change.any():
            return change.astype(np.uint8) * 255
        ys, xs = np.nonzero(change)
        masks, scores = self._predict(edited, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        ious = [(m & change).sum() / max((m | change).sum(), 1) for m in masks]
        refined = masks[int(np.argmax(ious))] & change
        return (refined if refined.sum() >= 0.5 * change.sum() else change).astype(np.uint8) * 255
