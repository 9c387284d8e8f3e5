"""Deprecated: the simulated server is now `moa.testing.sim`.

Kept so ``from moa.testing.server import SimModel, SimServer`` and
``python -m moa.testing.server --port 8000 --latency-ms 20`` go on working; both warn.
"""

from __future__ import annotations

import warnings

from moa.testing.sim import (
    FAULT_KINDS,
    FaultPlan,
    SimModel,
    SimRequest,
    SimServer,
    SimStats,
    count_completion_tokens,
    count_prompt_tokens,
    count_tokens,
    last_user_text,
    message_text,
)
from moa.testing.sim.cli import main

__all__ = [
    "FAULT_KINDS",
    "FaultPlan",
    "SimModel",
    "SimRequest",
    "SimServer",
    "SimStats",
    "count_completion_tokens",
    "count_prompt_tokens",
    "count_tokens",
    "last_user_text",
    "main",
    "message_text",
]

# Imported, the warning points at the importer; run with -m, at __main__, whose deprecation
# warnings Python shows by default (an importer's would be hidden inside runpy).
warnings.warn(
    "moa.testing.server is now moa.testing.sim",
    DeprecationWarning,
    stacklevel=1 if __name__ == "__main__" else 2,
)

if __name__ == "__main__":
    main(prog="python -m moa.testing.server")
