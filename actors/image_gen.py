"""IG — image generation: edit the normal image inside a region to add the described defect.

``procedural`` (CPU default, no weights): the prompt's shape, colour, size and contrast
words drive ``actors.procedural``; deterministic by seed; the defect is confined to the
object's foreground (MG's classical foreground).
``diffusers``: an inpainting pipeline (SD-2/SDXL inpainting, FLUX Fill) loaded with
``AutoPipelineForInpainting.from_pretrained`` from a local path or hub id. Concurrent
requests run as one batched pipeline call; the result is pasted back inside the region
only, so pixels outside it stay exactly the normal image's. The pipeline is reached only
through ``_pipeline_call``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from actors.defect_words import parse_prompt
from actors.errors import ToolError
from actors.mask_gen import classical_foreground
from actors.procedural import render_defect
from actors.regions import SIDE_FRACTION, place_on, to_normalized, to_pixels
from actors.schema import check_image
from actors.tool import BatchedTool, Tool, ToolRequest

SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 500},
        "image_index": {"type": "integer", "minimum": 0},
        "region": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4, "maxItems": 4},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    },
    "required": ["prompt"],
    "additionalProperties": False,
}


def resolve_region(req: ToolRequest, image: np.ndarray, size_word: str, tool: str, foreground=None):
    """Pixel box from the normalized ``region`` argument, or one placed on the object."""
    h, w = image.shape[:2]
    if "region" in req.arguments:
        try:
            return to_pixels(req.arguments["region"], w, h)
        except ValueError as e:
            raise ToolError("invalid_arguments", str(e), "region", tool) from None
    rng = np.random.default_rng(req.arguments.get("seed", 0))
    fg = classical_foreground(image) if foreground is None else foreground
    return place_on(fg, int(SIDE_FRACTION[size_word] * min(h, w)), rng)


class ProceduralImageGen(Tool):
    name = "image_gen"
    result_keys = {"image": "array", "region": "list", "region_px": "list"}
    schema = SCHEMA
    required_images = ("image",)

    def run_one(self, req: ToolRequest) -> dict:
        image = check_image(self.name, "image", req.images.get("image"))
        words = parse_prompt(req.arguments["prompt"])
        foreground = classical_foreground(image)
        box = resolve_region(req, image, words.size, self.name, foreground)
        edited, alpha = render_defect(image, box, words.spec(), req.arguments.get("seed", 0), allowed=foreground)
        h, w = image.shape[:2]
        return {"image": edited, "region": list(to_normalized(box, w, h)), "region_px": list(box),
                "understood": list(words.matched)}


class DiffusersImageGen(BatchedTool):
    name = "image_gen"
    result_keys = {"image": "array", "region": "list", "region_px": "list"}
    schema = SCHEMA
    required_images = ("image",)

    def __init__(self, model: Optional[str] = None, pipeline=None, steps: int = 20, guidance_scale: float = 7.5,
                 strength: float = 1.0, resolution: int = 512, dtype: str = "float16", device: Optional[str] = None):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if pipeline is None:
            from diffusers import AutoPipelineForInpainting

            if not model:
                raise ValueError("the diffusers backend needs tools.image_gen.model (local path or hub id)")
            torch_dtype = getattr(torch, dtype) if self.device == "cuda" else torch.float32
            pipeline = AutoPipelineForInpainting.from_pretrained(model, dtype=torch_dtype)
        self.pipe = pipeline.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance_scale, self.strength, self.resolution = steps, guidance_scale, strength, resolution

    def _pipeline_call(self, prompts: List[str], images: List[Image.Image], masks: List[Image.Image],
                       seeds: List[int]) -> List[Image.Image]:
        import torch

        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        out = self.pipe(prompt=prompts, image=images, mask_image=masks, num_inference_steps=self.steps,
                        guidance_scale=self.guidance_scale, strength=self.strength, generator=generators,
                        height=self.resolution, width=self.resolution, output_type="pil")
        return list(out.images)

    def run_batch(self, reqs: Sequence[ToolRequest]) -> list:
        results: list = [None] * len(reqs)
        todo = []
        for i, r in enumerate(reqs):
            try:
                image = check_image(self.name, "image", r.images.get("image"))
                box = resolve_region(r, image, parse_prompt(r.arguments["prompt"]).size, self.name)
                todo.append((i, r, image, box))
            except ToolError as e:
                results[i] = e
        if not todo:
            return results
        res = self.resolution
        pil_images = [Image.fromarray(img).resize((res, res), Image.BICUBIC) for _, _, img, _ in todo]
        pil_masks = []
        for _, _, img, (x0, y0, x1, y1) in todo:
            m = np.zeros(img.shape[:2], np.uint8)
            m[y0:y1, x0:x1] = 255
            pil_masks.append(Image.fromarray(m).resize((res, res), Image.NEAREST))
        outs = self._pipeline_call([r.arguments["prompt"] for _, r, _, _ in todo], pil_images, pil_masks,
                                   [r.arguments.get("seed", 0) for _, r, _, _ in todo])
        for (i, _, img, box), out in zip(todo, outs):
            h, w = img.shape[:2]
            gen = np.asarray(out.convert("RGB").resize((w, h), Image.BICUBIC))
            edited = img.copy()
            x0, y0, x1, y1 = box
            edited[y0:y1, x0:x1] = gen[y0:y1, x0:x1]
            results[i] = {"image": edited, "region": list(to_normalized(box, w, h)), "region_px": list(box),
                          "understood": list(parse_prompt(reqs[i].arguments["prompt"]).matched)}
        return results
