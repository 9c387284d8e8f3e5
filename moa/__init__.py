"""moa: Mixture-of-Agents orchestration.

Declarative topologies validated as graphs before any call, real models through one door (litellm,
direct OpenAI-compatible HTTP, an embedded llama.cpp model), and cost/quality trackers that compare
every setup with a single model.

``import moa`` is light: names are imported on first use, and litellm only when a model is called.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from moa._lazy import lazy_exports

if TYPE_CHECKING:
    from moa._run import Runner as Runner
    from moa.calls.budget import Budget as Budget
    from moa.calls.limits import set_rate_limit as set_rate_limit
    from moa.cascade.definition import Cascade as Cascade
    from moa.errors import BaselineFailed as BaselineFailed
    from moa.errors import BudgetExceeded as BudgetExceeded
    from moa.errors import DatasetError as DatasetError
    from moa.errors import MalformedReply as MalformedReply
    from moa.errors import MissingExtra as MissingExtra
    from moa.errors import MoAError as MoAError
    from moa.errors import ModelError as ModelError
    from moa.errors import ProviderError as ProviderError
    from moa.errors import QuorumNotReached as QuorumNotReached
    from moa.errors import RateLimited as RateLimited
    from moa.errors import RequestRefused as RequestRefused
    from moa.errors import RequestRejected as RequestRejected
    from moa.errors import TimedOut as TimedOut
    from moa.errors import TopologyError as TopologyError
    from moa.errors import UserError as UserError
    from moa.experiment import Experiment as Experiment
    from moa.log import configure_logging as configure_logging
    from moa.models.base import Model as Model
    from moa.models.base import ModelReply as ModelReply
    from moa.models.base import ModelRequest as ModelRequest
    from moa.results import CallRecord as CallRecord
    from moa.results import NodeResult as NodeResult
    from moa.results import RunResult as RunResult
    from moa.results import Usage as Usage
    from moa.topology import build as build
    from moa.topology.definition import Topology as Topology
    from moa.topology.loader import load as load
    from moa.topology.loader import presets as presets
    from moa.topology.spec import AgentSpec as AgentSpec
    from moa.topology.spec import NodeSpec as NodeSpec

__version__ = "0.2.0"

_EXPORTS = {
    "AgentSpec": "moa.topology.spec",
    "Budget": "moa.calls.budget",
    "BudgetExceeded": "moa.errors",
    "CallRecord": "moa.results",
    "BaselineFailed": "moa.errors",
    "Cascade": "moa.cascade.definition",
    "DatasetError": "moa.errors",
    "Experiment": "moa.experiment",
    "MalformedReply": "moa.errors",
    "MissingExtra": "moa.errors",
    "MoAError": "moa.errors",
    "Model": "moa.models.base",
    "ModelError": "moa.errors",
    "ModelReply": "moa.models.base",
    "ModelRequest": "moa.models.base",
    "NodeResult": "moa.results",
    "NodeSpec": "moa.topology.spec",
    "ProviderError": "moa.errors",
    "QuorumNotReached": "moa.errors",
    "RateLimited": "moa.errors",
    "RequestRefused": "moa.errors",
    "RequestRejected": "moa.errors",
    "RunResult": "moa.results",
    "Runner": "moa._run",
    "TimedOut": "moa.errors",
    "Topology": "moa.topology.definition",
    "TopologyError": "moa.errors",
    "Usage": "moa.results",
    "UserError": "moa.errors",
    "build": "moa.topology.build:",
    "configure_logging": "moa.log",
    "load": "moa.topology.loader",
    "presets": "moa.topology.loader",
    "set_rate_limit": "moa.calls.limits",
}

__all__ = sorted(_EXPORTS)


#: old names that still work, with a DeprecationWarning naming the new one
_DEPRECATED = {
    "Timeout": ("moa.errors", "TimedOut"),
    "Done": ("moa.results", "Done"),
    "Token": ("moa.results", "Token"),
}


_lazy_get, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        module_name, new = _DEPRECATED[name]
        warnings.warn(f"moa.{name} is now {module_name}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module_name), new)
    return _lazy_get(name)
