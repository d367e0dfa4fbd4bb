"""PG — prompt generation: the first editing prompt from category, defect type and knowledge.

``template`` (CPU default) writes the prompt from the knowledge entry's words, which the
procedural IG backend understands. ``llm`` asks an instruction model; the model is reached
only through ``_generate`` so tests can inject scripted outputs.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from actors.defect_words import prompt_for
from actors.errors import ToolError
from actors.knowledge_base import KnowledgeBase, UnknownDefect, load_knowledge_base
from actors.tool import BatchedTool, Tool, ToolRequest

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "minLength": 1, "maxLength": 64},
        "defect_type": {"type": "string", "minLength": 1, "maxLength": 64},
        "knowledge": {"type": "string", "maxLength": 2000},
    },
    "additionalProperties": False,
}


def task_entry(kb: KnowledgeBase, tool: str, req: ToolRequest):
    """The knowledge entry for the request's category/defect (arguments override context)."""
    category = req.arguments.get("category", req.context.get("category"))
    defect = req.arguments.get("defect_type", req.context.get("defect_type"))
    if not category or not defect:
        raise ToolError("invalid_arguments", "no category/defect_type in arguments or task", "category", tool)
    try:
        return kb.get(category, defect)
    except UnknownDefect as e:
        field = "category" if "category" in str(e) and "defect type" not in str(e) else "defect_type"
        raise ToolError("invalid_arguments", str(e), field, tool) from None


class TemplatePromptGen(Tool):
    name = "prompt_gen"
    result_keys = {"prompt": "str"}
    schema = SCHEMA

    def __init__(self, kb: Optional[KnowledgeBase] = None):
        self.kb = kb or load_knowledge_base()

    def run_one(self, req: ToolRequest) -> dict:
        entry = task_entry(self.kb, self.name, req)
        return {"prompt": prompt_for(entry)}


class LLMPromptGen(BatchedTool, TemplatePromptGen):
    INSTRUCTION = ("Write one short image-editing prompt that adds a realistic '{defect}' defect to a photo of a "
                   "{category}. Knowledge: {knowledge} Answer with the prompt only.")

    def __init__(self, model: str, max_new_tokens: int = 64, kb: Optional[KnowledgeBase] = None):
        super().__init__(kb)
        self.model_path, self.max_new_tokens = model, max_new_tokens
        self._model = self._tok = None

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.model_path)
            self._tok.padding_side = "left"
            self._model = AutoModelForCausalLM.from_pretrained(self.model_path).eval()

    def _generate(self, instructions: Sequence[str]) -> List[str]:
        import torch

        self._load()
        texts = [self._tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
                 for t in instructions]
        enc = self._tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = self._model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self._tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def run_batch(self, reqs: Sequence[ToolRequest]) -> list:
        results: list = [None] * len(reqs)
        todo, instructions = [], []
        for i, r in enumerate(reqs):
            try:
                e = task_entry(self.kb, self.name, r)
            except ToolError as err:
                results[i] = err
                continue
            todo.append((i, e))
            instructions.append(self.INSTRUCTION.format(defect=e.defect.replace("_", " "), category=e.category,
                                                        knowledge=r.arguments.get("knowledge", e.text())))
        for (i, e), text in zip(todo, self._generate(instructions) if todo else []):
            text = " ".join(text.split())[:300]
            # an empty or degenerate answer falls back to the template, and says so
            results[i] = {"prompt": text, "source": "llm"} if len(text) >= 8 else {"prompt": prompt_for(e), "source": "template-fallback"}
        return results
