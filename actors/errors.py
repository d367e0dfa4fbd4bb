"""Typed tool errors. A tool never raises into the episode: every failure becomes one of
these, carried back as data, so the policy reads it as an observation and can learn."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

ERROR_CODES = (
    "invalid_arguments",  # schema violation; ``field`` names the argument
    "unknown_tool",
    "bad_image_index",
    "timeout",
    "tool_failure",  # the tool raised
    "bad_output",  # the tool (e.g. a VLM judge) returned something unusable
    "unavailable",  # the actor hosting the tool died and could not be reached
)


@dataclass(frozen=True)
class ToolError(Exception):
    code: str
    message: str
    field: Optional[str] = None
    tool: Optional[str] = None

    def __post_init__(self):
        if self.code not in ERROR_CODES:
            raise ValueError(f"unknown tool error code {self.code!r}")

    def __str__(self) -> str:
        where = f" (field '{self.field}')" if self.field else ""
        return f"{self.tool or 'tool'}: {self.code}{where}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)
