"""What moa knows about litellm's provider prefixes, shared by the registry and both HTTP backends
(so none of them imports another for a constant)."""

from __future__ import annotations

__all__ = ["OPENAI_COMPATIBLE_PREFIXES", "speaks_openai"]

#: litellm provider prefixes whose api_base speaks the OpenAI chat completions protocol
OPENAI_COMPATIBLE_PREFIXES = (
    "openai",
    "hosted_vllm",
    "vllm",
    "llamafile",
    "lm_studio",
    "openai_like",
    "custom_openai",
)


def speaks_openai(model: str) -> bool:
    """Whether ``model``'s provider prefix names an OpenAI-compatible server."""
    return "/" in model and model.split("/", 1)[0] in OPENAI_COMPATIBLE_PREFIXES
