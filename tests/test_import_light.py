"""`import moa` stays light: no litellm, matplotlib or llama_cpp until they are needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("litellm", "matplotlib", "llama_cpp")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_moa_loads_no_heavy_dependency() -> None:
    """A bare `import moa` imports neither litellm, matplotlib nor llama_cpp."""
    assert _heavy(_modules_after("import moa")) == []


def test_building_a_runner_and_the_direct_path_loads_no_heavy_dependency() -> None:
    """Resolving the public names, a Runner and the direct HTTP backend still import no litellm."""
    code = (
        "import moa\n"
        "from moa.models.openai_http import OpenAIHTTPModel\n"
        "t = moa.build.parallel(['openai/a', 'openai/b'], aggregator='openai/c')\n"
        "r = moa.Runner()\n"
        "r.runtime(moa.AgentSpec(model='openai/a', api_base='http://127.0.0.1:9/v1'))\n"
    )
    assert _heavy(_modules_after(code)) == []
