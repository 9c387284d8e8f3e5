"""``moa view``: a local web viewer over experiment folders, and blind A/B voting by people.

Importing this package is light; starlette is imported when an app is made, uvicorn when the
command line starts a server (both come with the ``serve`` extra)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from moa.errors import MissingExtra

if TYPE_CHECKING:
    from types import ModuleType

    from starlette.applications import Starlette

__all__ = ["create_app", "require"]

INSTALL_HINT = "moa view needs the `serve` extra: pip install 'moa-sdk[serve]'"


def require(module: str) -> ModuleType:
    """Import one of the extra's modules or raise ``MissingExtra`` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{INSTALL_HINT} ({e.name or module} is not installed)") from None


def create_app(
    root: str | Path,
    *,
    voter: str | None = None,
    pairs: Literal["baseline", "all"] = "baseline",
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The viewer's ASGI app over ``root`` (see ``moa.view.app.create_app``)."""
    require("starlette")
    from moa.view.app import create_app as make

    return make(root, voter=voter, pairs=pairs, allowed_hosts=allowed_hosts)
