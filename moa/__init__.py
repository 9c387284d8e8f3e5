"""moa: Mixture-of-Agents orchestration.

Declarative topologies validated as graphs before any call, real models through one door (litellm,
direct OpenAI-compatible HTTP, an embedded llama.cpp model), and cost/quality trackers that compare
every setup with a single model.

``import moa`` is light: names are imported on first use, and litellm only when a model is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa import build
    from moa.budget import Budget
    from moa.engine import Runner
    from moa.errors import (
        BudgetExceeded,
        DatasetError,
        MalformedReply,
        MissingExtra,
        MoAError,
        ModelError,
        ProviderError,
        QuorumNotReached,
        RateLimited,
        RequestRejected,
        Timeout,
        TopologyError,
        UserError,
    )
    from moa.limits import set_rate_limit
    from moa.loader import load, presets
    from moa.log import configure_logging
    from moa.models.base import Model, ModelReply, ModelRequest
    from moa.results import CallRecord, NodeResult, RunResult, Usage
    from moa.spec import AgentSpec, NodeSpec
    from moa.topology import Done, Token, Topology

__version__ = "0.1.0"

_EXPORTS = {
    "AgentSpec": "moa.spec",
    "Budget": "moa.budget",
    "BudgetExceeded": "moa.errors",
    "CallRecord": "moa.results",
    "DatasetError": "moa.errors",
    "Done": "moa.topology",
    "MalformedReply": "moa.errors",
    "MissingExtra": "moa.errors",
    "MoAError": "moa.errors",
    "Model": "moa.models.base",
    "ModelError": "moa.errors",
    "ModelReply": "moa.models.base",
    "ModelRequest": "moa.models.base",
    "NodeResult": "moa.results",
    "NodeSpec": "moa.spec",
    "ProviderError": "moa.errors",
    "QuorumNotReached": "moa.errors",
    "RateLimited": "moa.errors",
    "RequestRejected": "moa.errors",
    "RunResult": "moa.results",
    "Runner": "moa.engine",
    "Timeout": "moa.errors",
    "Token": "moa.topology",
    "Topology": "moa.topology",
    "TopologyError": "moa.errors",
    "Usage": "moa.results",
    "UserError": "moa.errors",
    "build": "moa.build",
    "configure_logging": "moa.log",
    "load": "moa.loader",
    "presets": "moa.loader",
    "set_rate_limit": "moa.limits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'moa' has no attribute {name!r}")
    value: Any = importlib.import_module(module)
    if name != "build":
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
