"""Build a tool core from its config section — the single place that maps backend names
to classes. Heavy backends are imported only when chosen."""
from __future__ import annotations

from typing import Any

from actors.config import ToolsConfig
from actors.tool import Tool

TOOL_SECTIONS = {"prompt_gen": "prompt_gen", "image_gen": "image_gen", "quality_eval": "quality_eval",
                 "knowledge": "knowledge", "mask_gen": "mask_gen"}


def build_tool(name: str, tools: ToolsConfig, **inject: Any) -> Tool:
    """``inject`` passes ready-made models (tests: tiny pipelines, a tiny SAM). PG, QE and
    KR get the shipped knowledge with ``tools.knowledge.extra`` merged over it."""
    from actors.knowledge_files import load_knowledge

    kb = load_knowledge(tuple(tools.knowledge.extra)) if name in ("prompt_gen", "quality_eval", "knowledge") else None
    if name == "prompt_gen":
        c = tools.prompt_gen
        if c.backend == "llm":
            from actors.prompt_gen import LLMPromptGen

            return LLMPromptGen(c.model, c.max_new_tokens, kb=kb)
        from actors.prompt_gen import TemplatePromptGen

        return TemplatePromptGen(kb)
    if name == "image_gen":
        c = tools.image_gen
        if c.backend == "diffusers":
            from actors.image_gen import DiffusersImageGen

            return DiffusersImageGen(c.model, inject.get("pipeline"), c.steps, c.guidance_scale, c.strength,
                                     c.resolution, c.dtype)
        from actors.image_gen import ProceduralImageGen

        return ProceduralImageGen()
    if name == "quality_eval":
        c = tools.quality_eval
        if c.backend == "vlm":
            from actors.quality_eval import VLMJudge

            return VLMJudge(c.model, c.max_new_tokens, kb=kb, pass_score=c.pass_score)
        from actors.quality_eval import MetricJudge

        return MetricJudge(kb, pass_score=c.pass_score)
    if name == "knowledge":
        from actors.knowledge import KnowledgeRetriever

        return KnowledgeRetriever(tools.knowledge.embedder, tools.knowledge.top_k, kb)
    if name == "mask_gen":
        c = tools.mask_gen
        if c.backend == "sam":
            from actors.mask_gen import SamMaskGen

            return SamMaskGen(c.checkpoint, c.model_type, inject.get("model"), c.change_threshold)
        from actors.mask_gen import ClassicalMaskGen

        return ClassicalMaskGen(c.change_threshold)
    raise ValueError(f"unknown tool {name!r}; known: {', '.join(TOOL_SECTIONS)}")


def resources_of(name: str, tools: ToolsConfig):
    return getattr(tools, TOOL_SECTIONS[name]).resources
