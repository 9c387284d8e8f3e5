"""Execution: the ``Runner`` (a run group) and the engine that runs one validated graph on one
prompt. Private: users reach it through ``moa.Runner`` and ``Topology.run``/``stream``."""

from moa._run.runner import Runnable, Runner, default_runner, every_agent, refuse_in_running_loop

__all__ = ["Runnable", "Runner", "default_runner", "every_agent", "refuse_in_running_loop"]
