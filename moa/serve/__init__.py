"""``moa serve``: any topology as an OpenAI-compatible chat model (the ``serve`` extra).

Importing this package is light; starlette is imported when an app is made, uvicorn when the
command line starts a server."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from moa.errors import MissingExtra

if TYPE_CHECKING:
    from types import ModuleType

    from starlette.applications import Starlette

    from moa._run import Runner
    from moa.topology.definition import Topology

__all__ = ["create_app", "require"]

INSTALL_HINT = "moa serve needs the `serve` extra: pip install 'moa-sdk[serve]'"


def require(module: str) -> ModuleType:
    """Import one of the extra's modules or raise ``MissingExtra`` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{INSTALL_HINT} ({e.name or module} is not installed)") from None


def create_app(
    topologies: Sequence[Topology],
    *,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    runner: Runner | None = None,
    allow_trace: bool = True,
) -> Starlette:
    """The ASGI app serving ``topologies`` (see ``moa.serve.app.create_app``)."""
    require("starlette")
    from moa.serve.app import create_app as make

    return make(
        topologies, api_key=api_key, max_body_bytes=max_body_bytes, runner=runner, allow_trace=allow_trace
    )
