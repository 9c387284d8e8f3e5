"""Credentials and provider names checked before any call: every agent of a topology (fallbacks
included) whose key is missing, and every model whose provider prefix litellm does not know, found
at once, so a run, an experiment or a server refuses to start instead of failing mid-way.

A model needs no key check when a user-supplied backend answers it (``Runner(models=...)``), when it
is the embedded model (``local/...``), or when the agent names its own server (``api_base``: a
self-hosted server often needs none). With ``api_key_env`` the agent's own variable must be set.
Otherwise the provider's usual variables are checked, for the providers whose key is one variable;
providers with credential chains (Bedrock, Vertex, Azure AD, SageMaker, ...) are left to the
provider's own error, since a profile or an instance role may hold their credentials.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable

from moa.errors import UserError
from moa.models.gguf import PREFIX as LOCAL_PREFIX
from moa.models.gguf import local_model_unavailable, unknown_local_model
from moa.models.providers import OPENAI_COMPATIBLE_PREFIXES
from moa.models.registry import use_direct_http
from moa.topology.spec import AgentSpec

__all__ = [
    "PROVIDER_KEYS",
    "check_agents",
    "missing_keys",
    "takes_agent_key",
    "unavailable_local_models",
    "unknown_local_models",
    "unknown_providers",
]

#: provider prefix -> the environment variables litellm reads its key from (any one suffices)
PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHER_AI_TOKEN"),
    "groq": ("GROQ_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY", "FIREWORKSAI_API_KEY"),
    "openrouter": ("OPENROUTER_API_KEY", "OR_API_KEY"),
    "xai": ("XAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "cohere": ("COHERE_API_KEY", "CO_API_KEY"),
    "cohere_chat": ("COHERE_API_KEY", "CO_API_KEY"),
    "perplexity": ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"),
}

# prefixes moa itself answers or that tests and examples use for their own backends
_OWN_PREFIXES = ("local",)


def _provider(model: str) -> str | None:
    """The provider prefix of ``model``; for a bare name (``gpt-4o``) the one litellm infers."""
    if "/" in model:
        return model.split("/", 1)[0]
    from moa.models.litellm import import_litellm  # litellm loads only when a bare name needs it

    try:
        return str(import_litellm().get_llm_provider(model)[1])
    except Exception:  # litellm cannot tell: the provider's own error will say more at call time
        return None


def takes_agent_key(agent: AgentSpec, model: str) -> bool:
    """Whether ``model``, one of ``agent``'s, is sent with the key of the agent's ``api_key_env``:
    its model, and a fallback to the same server (the agent's ``api_base``) or the same provider.
    A fallback of another provider takes that provider's usual key: given the agent's, an OpenAI
    key went to Anthropic (or Groq's to Together) and the fallback failed on a 401."""
    if model == agent.model or agent.api_base:
        return True
    return _provider(model) == _provider(agent.model)


def _known_providers() -> set[str]:
    from moa.models.litellm import import_litellm

    return {str(getattr(p, "value", p)) for p in import_litellm().provider_list}


def _models(agent: AgentSpec) -> list[str]:
    return [agent.model, *agent.fallbacks]


def unknown_providers(
    agents: Iterable[tuple[str, AgentSpec]], answered: Callable[[str], bool] = lambda m: False
) -> list[str]:
    """One line per model whose provider prefix litellm does not know, with "did you mean";
    ``agents`` pairs a label (``agents.writer``, ``node w1``) with each agent."""
    lines: list[str] = []
    known: set[str] | None = None
    for name, agent in agents:
        for model in _models(agent):
            if answered(model):
                continue
            if "/" not in model:
                problem = _unroutable(model, agent)
                if problem is not None:
                    lines.append(f"{name}: model `{model}`: {problem}")
                continue
            prefix = model.split("/", 1)[0]
            if prefix in _OWN_PREFIXES or prefix in PROVIDER_KEYS or prefix in OPENAI_COMPATIBLE_PREFIXES:
                continue  # known without loading litellm's provider list
            if known is None:
                known = _known_providers()
            if prefix not in known:
                close = difflib.get_close_matches(prefix, sorted(known), n=1)
                hint = f"; did you mean `{close[0]}/{model.split('/', 1)[1]}`?" if close else ""
                lines.append(f"{name}: model `{model}`: unknown provider `{prefix}`{hint}")
    return lines


def _unroutable(model: str, agent: AgentSpec) -> str | None:
    """Why litellm cannot send ``model``, a name without a provider prefix, for ``agent``: it infers
    no provider for it (``gpt4o``, ``claude-haiku``), so every call would fail, after the nodes
    before it were paid for; None when it can, or when the direct path sends the name as written."""
    if use_direct_http(model, agent.api_base, agent.transport):
        return None
    from moa.models.litellm import import_litellm

    litellm = import_litellm()
    # as litellm routes the call: its api_base and a `custom_llm_provider` in params count
    own = agent.params.get("custom_llm_provider")
    try:
        litellm.get_llm_provider(
            model=model, custom_llm_provider=own if isinstance(own, str) else None, api_base=agent.api_base
        )
    except Exception as e:
        if "LLM Provider NOT provided" not in str(e):
            return None  # another complaint: the provider's own error says more at call time
    else:
        return None
    hint = ""
    from moa.calls.pricing import near_priced_model

    near = near_priced_model(model)
    entry = litellm.model_cost.get(near) if near else None
    if near and isinstance(entry, dict) and isinstance(entry.get("litellm_provider"), str):
        hint = f"; did you mean `{near if _provider(near) else entry['litellm_provider'] + '/' + near}`?"
    return (
        "litellm knows no provider for it: write it with one (`openai/...`, `anthropic/...`; see "
        "https://docs.litellm.ai/docs/providers), or `openai/<name>` with `api_base` for an "
        f"OpenAI-compatible server{hint}"
    )


def missing_keys(
    agents: Iterable[tuple[str, AgentSpec]], answered: Callable[[str], bool] = lambda m: False
) -> list[str]:
    """One line per missing environment variable, naming the agents (and models) that need it."""
    need: dict[str, list[str]] = {}
    for name, agent in agents:
        models = [m for m in _models(agent) if not answered(m) and not m.startswith("local/")]
        if not models:
            continue
        if agent.api_key_env:
            own = [m for m in models if takes_agent_key(agent, m)]
            if own and not os.environ.get(agent.api_key_env):
                need.setdefault(f"`{agent.api_key_env}`", []).append(f"{name} ({agent.model}, api_key_env)")
            models = [m for m in models if m not in own]  # another provider's fallbacks: its key
        elif agent.api_base:
            continue
        for model in models:
            provider = _provider(model)
            names = PROVIDER_KEYS.get(provider or "")
            if names and not any(os.environ.get(n) for n in names):
                key = " or ".join(f"`{n}`" for n in names)
                need.setdefault(key, []).append(f"{name} ({model})")
    return [f"{var} is not set (needed by {', '.join(dict.fromkeys(who))})" for var, who in need.items()]


def unknown_local_models(
    agents: Iterable[tuple[str, AgentSpec]], answered: Callable[[str], bool] = lambda m: False
) -> list[str]:
    """A line for each ``local/<name>`` of ``agents`` (fallbacks included) that names no local model
    and no backend of the runner answers: a run would fail at that call, after paying for the ones
    before it, so ``preflight`` and ``moa validate`` refuse it up front."""
    return [
        f"{where}: {problem}"
        for where, a in agents
        for m in [a.model, *a.fallbacks]
        if m.startswith(LOCAL_PREFIX)
        and not answered(m)
        and (problem := unknown_local_model(m, a.params)) is not None
    ]


def unavailable_local_models(agents: Iterable[tuple[str, AgentSpec]]) -> list[str]:
    """One line per reason this process cannot run an embedded model of ``agents`` (fallbacks
    included), naming the agents that need it. Not part of ``check_agents``: an experiment may
    run its local setups on Dask workers, which hold the extra and the files instead (it checks
    them itself on the local executor)."""
    need: dict[str, list[str]] = {}
    for where, a in agents:
        for m in [a.model, *a.fallbacks]:
            if m.startswith(LOCAL_PREFIX) and unknown_local_model(m, a.params) is None:
                problem = local_model_unavailable(m, a.params)
                if problem is not None:
                    need.setdefault(problem, []).append(f"{where} ({m})")
    return [f"{problem} (needed by {', '.join(dict.fromkeys(who))})" for problem, who in need.items()]


def check_agents(
    agents: Iterable[tuple[str, AgentSpec]], *, source: str, answered: Callable[[str], bool] = lambda m: False
) -> None:
    """Raise one ``UserError`` listing every unknown provider, unknown local model and missing key of
    ``agents``, one line each, each prefixed with ``source``."""
    pairs = list(agents)
    problems = (
        unknown_providers(pairs, answered)
        + unknown_local_models(pairs, answered)
        + missing_keys(pairs, answered)
    )
    if problems:
        raise UserError("\n".join(f"{source}: {p}" for p in problems))
