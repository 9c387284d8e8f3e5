"""Which backend answers a model string: user overrides (exact or glob), the embedded model for
``local/...``, the direct OpenAI-compatible path, or litellm. One backend instance per run group,
so the litellm module, the pooled HTTP sessions and loaded weights are shared by every call."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from typing import Any, Protocol

from moa.errors import UserError
from moa.models.base import Model
from moa.models.providers import OPENAI_COMPATIBLE_PREFIXES, named_endpoint, speaks_openai

__all__ = ["OPENAI_COMPATIBLE_PREFIXES", "ModelRegistry", "check_backend", "use_direct_http"]


def use_direct_http(model: str, api_base: str | None, transport: str) -> bool:
    """The direct path (aiohttp) serves ``transport: openai-http``; with ``auto``, an api_base of an
    OpenAI-compatible provider, and the named providers whose API is OpenAI's (``groq/``,
    ``together_ai/``, ... at their public URL: ``NAMED_OPENAI_ENDPOINTS``). litellm serves the rest
    (Anthropic, Bedrock, Vertex, ...) and whatever says ``transport: litellm``."""
    if transport == "openai-http":
        return True
    if transport != "auto":
        return False
    if not api_base:
        return named_endpoint(model) is not None
    return speaks_openai(model)


def check_backend(key: str, model: object) -> None:
    """Refuse, before any call, a backend given for ``key`` that cannot answer, whose ``local`` (if
    it says; absent, False) is not a bool, or whose send report would bend the attempt clock: a
    ``send_wait_s`` below zero would cut every attempt before its ``timeout_s``, and a
    ``reports_send`` that is not a bool is a typo, not a promise."""
    name = type(model).__name__
    if not callable(getattr(model, "complete", None)):
        raise UserError(f"models[{key!r}]: {name} has no complete() method, so it cannot answer calls")
    local = getattr(model, "local", False)
    if not isinstance(local, bool):
        raise UserError(f"models[{key!r}]: {name}.local must be True or False, got {local!r}")
    reports = getattr(model, "reports_send", False)
    if not isinstance(reports, bool):
        raise UserError(f"models[{key!r}]: {name}.reports_send must be True or False, got {reports!r}")
    wait = getattr(model, "send_wait_s", None)
    if wait is not None and (
        isinstance(wait, bool) or not isinstance(wait, int | float) or not math.isfinite(wait) or wait < 0
    ):
        raise UserError(
            f"models[{key!r}]: {name}.send_wait_s must be None or a finite number of seconds >= 0, "
            f"got {wait!r}"
        )


class _Owned(Protocol):
    """A backend the registry made, which it closes."""

    async def aclose(self) -> None: ...


class ModelRegistry:
    """Resolves and caches backends for one run group."""

    def __init__(self, overrides: Mapping[str, Model] | None = None) -> None:
        self._exact: dict[str, Model] = {}
        self._globs: list[tuple[str, Model]] = []
        for key, model in (overrides or {}).items():
            check_backend(key, model)
            if any(c in key for c in "*?["):
                self._globs.append((key, model))
            else:
                self._exact[key] = model
        self._litellm: Model | None = None
        self._http: Model | None = None
        self._owned: list[_Owned] = []

    def override_for(self, model: str) -> Model | None:
        found = self._exact.get(model)
        if found is not None:
            return found
        for pattern, m in self._globs:
            if fnmatch.fnmatchcase(model, pattern):
                return m
        return None

    def backend(
        self, model: str, *, api_base: str | None, transport: str, params: Mapping[str, Any]
    ) -> Model:
        found = self.override_for(model)
        if found is not None:
            return found
        if model.startswith("local/"):
            from moa.models.local import resolve_local_model

            return resolve_local_model(model, params)
        if use_direct_http(model, api_base, transport):
            if self._http is None:
                from moa.models.openai_http import OpenAIHTTPModel

                http = self._http = OpenAIHTTPModel()
                self._owned.append(http)
            return self._http
        if self._litellm is None:
            from moa.models.litellm import LitellmModel

            lite = self._litellm = LitellmModel()
            self._owned.append(lite)
        return self._litellm

    async def aclose(self) -> None:
        """Close the backends this registry created (not user overrides, not shared local weights)."""
        owned, self._owned = self._owned, []
        self._litellm = self._http = None
        for m in owned:
            await m.aclose()
