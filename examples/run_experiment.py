"""The experiment API from Python: a majority vote of three samples against one call, on simulated
models behind a loopback OpenAI-compatible server (no API key, no network, a few seconds).

Each simulated model answers correctly with probability 0.6, so the single call should score about
0.6. A majority of three is right when two or three samples are (3p^2 - 2p^3 = 0.648) and, because
the simulated wrong answers rarely agree, also on a three-way split when the first sample (in input
order: a tie goes to it) is the right one: about 0.74 in all. The report says whether 200 items are
enough to tell the two apart.

    python examples/run_experiment.py [OUT_DIR]

The simulator listens on a new port each time, and a setup's ``api_base`` is part of what its stored
runs are checked against, so a second run cannot resume the first: it writes to ``OUT_DIR-2`` (then
``-3``, ...) and leaves the earlier results as they are.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from moa.experiment import Experiment, ExperimentSpec
from moa.experiment.report import format_table
from moa.testing.sim import SimModel, SimServer

N = 200


def fresh(out: Path) -> Path:
    """``out``, or the first of ``out-2``, ``out-3``, ... that holds no earlier run of this script."""
    folder, n = out, 1
    while (folder / "experiment.sqlite").exists():
        n += 1
        folder = out.with_name(f"{out.name}-{n}")
    return folder


def main(out: Path) -> None:
    out = fresh(out)
    rows = [{"id": f"q{i}", "input": f"What is {i} + {i}?", "target": str(2 * i)} for i in range(N)]
    answers = {r["input"]: r["target"] for r in rows}
    models = {
        "single-m": SimModel.with_accuracy(0.6, answers, seed=1),
        "sampler-m": SimModel.with_accuracy(0.6, answers, seed=2),
    }
    with SimServer(models) as srv, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        price = "pricing: {input_per_mtok: 0.15, output_per_mtok: 0.6}"
        agent = f"api_base: {json.dumps(srv.base_url)}, {price}"
        (folder / "single.yaml").write_text(
            f"name: single\nkind: single\nagent: a\nagents:\n  a: {{model: openai/single-m, {agent}}}\n"
        )
        (folder / "vote.yaml").write_text(
            "name: majority-of-3\nkind: self_moa\nagent: a\nsamples: 3\nreduce: majority\n"
            f"agents:\n  a: {{model: openai/sampler-m, temperature: 0.7, {agent}}}\n"
        )
        (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        spec = ExperimentSpec(
            name="majority-vote",
            dataset="data.jsonl",
            evaluator={"name": "numeric"},
            baseline="single.yaml",
            setups=["vote.yaml"],
            concurrency=8,
        )
        # Experiment(spec, out=..., runner=moa.Runner(models={...})) injects your own backends or fakes
        summary = Experiment(spec, out=out, base_dir=folder, progress=False).run()
    print(format_table(summary))
    vote = summary.setup("majority-of-3")
    low, high = vote.delta_ci95 or (float("nan"), float("nan"))
    print(
        f"\nmajority-of-3 vs single: {vote.delta_vs_baseline:+.3f} [{low:+.3f}, {high:+.3f}], p={vote.p_value:.3g}"
    )
    print(f"items needed for 80% power at this difference: {vote.power_n}")
    print(f"reports in {out}/")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("moa-results") / "majority-vote")
