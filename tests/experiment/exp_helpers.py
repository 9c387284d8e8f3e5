"""Helpers for the experiment tests: simulated models with a known accuracy behind the loopback
server, and experiment folders written on the fly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moa.testing.sim import SimModel, SimRequest, last_user_text

WRONG = "wrong"


class Accuracy:
    """Correct with probability ``p`` (a reproducible draw per model, question and call index), else
    always the same wrong answer, so a majority of three is right exactly when two or three are
    (3p^2 - 2p^3). Every question the model is asked is recorded in ``seen``."""

    def __init__(self, p: float, answers: dict[str, str], seed: int = 0) -> None:
        self.p, self.answers, self.seed = p, answers, seed
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, req: SimRequest) -> str:
        text = last_user_text(req.messages)
        with self._lock:
            self.seen.append(text)
        correct = self.answers.get(text.strip(), "unknown")
        material = f"{self.seed}|{req.model}|{text}|{req.call_index}".encode()
        u = int.from_bytes(hashlib.sha256(material).digest()[:8], "big") / 2**64
        return correct if u < self.p else WRONG


def sim(
    p: float, answers: dict[str, str], seed: int = 0, latency_s: float = 0.0
) -> tuple[SimModel, Accuracy]:
    acc = Accuracy(p, answers, seed)
    return SimModel(latency_s=latency_s, answer=acc), acc


def questions(n: int, *, categories: Sequence[str] = ()) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"id": f"q{i}", "input": f"What is {i} plus {i}?", "target": str(2 * i)}
        if categories:
            row["category"] = categories[i % len(categories)]
        rows.append(row)
    return rows


def answers_of(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {r["input"]: r["target"] for r in rows}


def write_experiment(
    folder: Path,
    base_url: str,
    rows: Sequence[dict[str, Any]],
    *,
    evaluator: Any = "exact",
    concurrency: int = 8,
    extra: str = "",
) -> Path:
    """``single.yaml`` (model single-m), ``majority.yaml`` (3 samples of maj-m, majority vote), the
    dataset and ``exp.yaml``; returns the experiment file."""
    folder.mkdir(parents=True, exist_ok=True)
    price = "pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0}"
    agent = f"api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}, {price}"
    (folder / "single.yaml").write_text(
        f"name: single\nkind: single\nagent: a\nagents:\n  a: {{model: openai/single-m, {agent}}}\n"
    )
    (folder / "majority.yaml").write_text(
        "name: majority-3\nkind: self_moa\nagent: a\nsamples: 3\nreduce: majority\n"
        f"agents:\n  a: {{model: openai/maj-m, temperature: 0.7, {agent}}}\n"
    )
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # evaluator=None leaves the line out: the dataset layout's own evaluator is used
    named = "" if evaluator is None else f"evaluator: {json.dumps(evaluator)}\n"
    (folder / "exp.yaml").write_text(
        f"name: sim-majority\ndataset: data.jsonl\n{named}"
        f"baseline: single.yaml\nsetups: [majority.yaml]\nconcurrency: {concurrency}\n{extra}"
    )
    return folder / "exp.yaml"


def compare_by_layout(
    tmp_path: Path, models: dict[str, Any], rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """`single` (single-m) against `majority-3` (maj-m) over ``rows`` on the simulated server, with
    no `evaluator:` in the file; the summary.json written."""
    from moa.experiment import Experiment
    from moa.testing.sim import SimServer

    with SimServer(models) as srv:
        exp = write_experiment(tmp_path / "e", srv.base_url, rows, evaluator=None)
        Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
    summary: dict[str, Any] = json.loads((tmp_path / "out" / "summary.json").read_text())
    return summary


@contextmanager
def loopback_cluster() -> Iterator[Any]:
    """A real Dask ``LocalCluster`` of 2 single-threaded worker processes on 127.0.0.1, as the
    ``dask`` executor starts one: killing a worker must not take the test process down."""
    import distributed  # the caller has importorskip'd it

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # as the dask executor: 8787 may be taken
        scheduler_kwargs={"dashboard": False},
        silence_logs=50,
    ) as c:
        yield c


@contextmanager
def killable_scheduler(
    tmp: Path, preload: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Dask scheduler in its own process on 127.0.0.1 (a ``LocalCluster``'s lives in the test's),
    with one single-threaded worker process (no nanny: nothing outlives the test) that runs the
    script ``preload`` first: the scheduler's address and its process, to kill."""
    file = tmp / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    dask = [sys.executable, "-m", "dask"]
    local = ["--host", "127.0.0.1", "--no-dashboard"]
    scheduler = subprocess.Popen(
        [*dask, "scheduler", *local, "--port", "0", "--scheduler-file", str(file)], **quiet
    )
    procs = [scheduler]
    try:
        deadline = time.monotonic() + 120
        while not file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        address = str(json.loads(file.read_text())["address"])
        worker = [*dask, "worker", address, *local, "--nthreads", "1", "--no-nanny"]
        if preload is not None:
            worker += ["--preload", str(preload)]
        procs.append(subprocess.Popen(worker, **quiet))
        # moa gives a scheduler CONNECT_TIMEOUT_S to show a worker: a worker process importing Dask
        # on a busy machine (or beside another test worker) took longer, and the experiment ended
        # with "the scheduler has no worker" before the test's fault was ever reached
        import distributed  # only the Dask tests pay for its import

        with distributed.Client(address, timeout=120) as client:
            client.wait_for_workers(1, timeout=120)
        yield address, scheduler
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)
