"""Which executor an experiment names: ``local``, ``dask`` (a cluster on this machine) or the address
of a running Dask scheduler. Only ``re`` here, so the command line checks ``--executor`` cheaply."""

from __future__ import annotations

import re

__all__ = ["check_executor"]

# tcp only: a tls:// scheduler needs certificates this flag cannot carry
_ADDRESS = re.compile(r"tcp://[A-Za-z0-9._\-\[\]:]+:[0-9]{1,5}")


def check_executor(text: str) -> str:
    """``text`` if it names an executor, else ``ValueError`` with one line saying what would."""
    if text in ("local", "dask") or _ADDRESS.fullmatch(text):
        return text
    raise ValueError(
        f"executor must be `local`, `dask` or a Dask scheduler address `tcp://HOST:PORT`, got {text!r}"
    )
