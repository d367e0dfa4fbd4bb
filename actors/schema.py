"""Argument validation against each tool's JSON schema, before any work.

The first violation becomes a ``ToolError('invalid_arguments')`` whose ``field`` is the
dotted path of the offending argument (or the missing/unexpected name)."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
from jsonschema import Draft202012Validator

from actors.errors import ToolError

_VALIDATORS: Dict[int, Draft202012Validator] = {}


def _validator(schema: dict) -> Draft202012Validator:
    v = _VALIDATORS.get(id(schema))
    if v is None:
        Draft202012Validator.check_schema(schema)
        v = _VALIDATORS[id(schema)] = Draft202012Validator(schema)
    return v


def validate_arguments(tool: str, schema: dict, arguments: Any) -> None:
    if not isinstance(arguments, dict):
        raise ToolError("invalid_arguments", f"arguments must be a JSON object, got {type(arguments).__name__}", None, tool)
    errors = sorted(_validator(schema).iter_errors(arguments), key=lambda e: (len(e.path), list(e.path)))
    if not errors:
        return
    e = errors[0]
    field = ".".join(str(p) for p in e.path) or None
    if e.validator == "required":
        field = e.message.split("'")[1]
        msg = f"missing required argument '{field}'"
    elif e.validator == "additionalProperties":
        extra = sorted(set(arguments) - set(schema.get("properties", {})))
        field = extra[0] if extra else None
        msg = f"unexpected argument '{field}'"
    else:
        msg = f"argument '{field}': {e.message}"
    raise ToolError("invalid_arguments", msg, field, tool)


def check_image(tool: str, name: str, image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ToolError("invalid_arguments", f"image '{name}' must be an HxWx3 uint8 array, got {desc}", name, tool)
    if min(image.shape[:2]) < 8:
        raise ToolError("invalid_arguments", f"image '{name}' is too small: {image.shape[1]}x{image.shape[0]}", name, tool)
    return image


_KINDS = {"array": (np.ndarray,), "list": (list, tuple), "number": (int, float, np.integer, np.floating),
          "str": (str,), "bool": (bool, np.bool_)}


def check_result(tool: str, result_keys: dict, result: Any) -> None:
    """A tool's result carries what the episode reads, of the right kind; else ``bad_output``."""
    if not isinstance(result, dict):
        raise ToolError("bad_output", f"the tool returned {type(result).__name__}, not a result object", None, tool)
    for key, kind in result_keys.items():
        if key not in result:
            raise ToolError("bad_output", f"the tool's result lacks '{key}'", key, tool)
        if not isinstance(result[key], _KINDS[kind]) or (kind != "bool" and isinstance(result[key], bool)):
            raise ToolError("bad_output", f"the tool's '{key}' is {type(result[key]).__name__}, not {kind}", key, tool)
