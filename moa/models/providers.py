"""What moa knows about litellm's provider prefixes, shared by the registry and both HTTP backends
(so none of them imports another for a constant)."""

from __future__ import annotations

__all__ = ["NAMED_OPENAI_ENDPOINTS", "OPENAI_COMPATIBLE_PREFIXES", "named_endpoint", "speaks_openai"]

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


#: named providers whose public API is OpenAI's chat completions: without an ``api_base`` (and with
#: ``transport: auto``) their models go to the direct path at this URL, with their usual key, instead
#: of through litellm (about 5 ms of CPU per call there). ``transport: litellm`` keeps litellm.
NAMED_OPENAI_ENDPOINTS: dict[str, str] = {
    "groq": "https://api.groq.com/openai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "mistral": "https://api.mistral.ai/v1",
    "xai": "https://api.x.ai/v1",
}


def named_endpoint(model: str) -> str | None:
    """The public OpenAI-compatible base URL of ``model``'s named provider, if it has one."""
    if "/" not in model:
        return None
    return NAMED_OPENAI_ENDPOINTS.get(model.split("/", 1)[0])
