"""Definition: the declarative spec (pydantic), the ``kind:`` shorthands, the validated graph
(networkx), loading files and presets, the Python builders and the prompt templates.

Names are imported on first use, so the engine can import ``moa.topology.graph`` without pulling in
``Topology`` (whose ``run`` calls the engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moa._lazy import lazy_exports

if TYPE_CHECKING:
    from moa.topology.definition import Topology as Topology
    from moa.topology.loader import load as load
    from moa.topology.loader import load_data as load_data
    from moa.topology.loader import presets as presets
    from moa.topology.spec import AgentSpec as AgentSpec
    from moa.topology.spec import NodeSpec as NodeSpec
    from moa.topology.spec import TopologySpec as TopologySpec

_EXPORTS = {
    "AgentSpec": "moa.topology.spec",
    "NodeSpec": "moa.topology.spec",
    "Topology": "moa.topology.definition",
    "TopologySpec": "moa.topology.spec",
    "load": "moa.topology.loader",
    "load_data": "moa.topology.loader",
    "presets": "moa.topology.loader",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
