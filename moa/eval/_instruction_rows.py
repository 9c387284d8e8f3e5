"""Instruction rows (Alpaca, AlpacaEval, Dolly): an ``instruction`` and the material it works on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moa.eval._row_fields import RowFields, opt_str, prompt_text, required_str

__all__ = ["read_instruction_row"]


def read_instruction_row(row: Mapping[str, Any]) -> RowFields:
    """An Alpaca / AlpacaEval / Dolly row: the instruction, then a blank line and its `input` (Dolly:
    `context`) when there is one; read as a generic row, the instruction was dropped and the context
    alone sent. A reference model's `output`/`response` is not a target and is not kept."""
    instruction = prompt_text(required_str(row, "instruction"), "instruction")
    key = "input" if row.get("input") is not None else "context"
    material = opt_str(row, key)
    text = f"{instruction}\n\n{material}" if material and material.strip() else instruction
    category = row.get("category", row.get("dataset"))
    return RowFields(
        input=text,
        target=opt_str(row, "target", numbers=True),
        category=category if isinstance(category, str) and category else None,
    )
