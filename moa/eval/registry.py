"""The evaluators by name: ``make_evaluator`` turns an experiment file's ``evaluator:`` field into an
evaluator, and ``known_evaluators`` lists the names it accepts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from moa.errors import UserError
from moa.eval.choice import ChoiceConfig, ChoiceEvaluator
from moa.eval.execution import ExecutionConfig, ExecutionEvaluator
from moa.eval.judge import JudgeConfig, JudgeEvaluator
from moa.eval.reference import (
    ContainsConfig,
    ContainsEvaluator,
    ExactConfig,
    ExactEvaluator,
    F1Config,
    F1Evaluator,
    NumericConfig,
    NumericEvaluator,
    RegexConfig,
    RegexEvaluator,
)
from moa.eval.types import Evaluator, PairwiseEvaluator
from moa.topology.loader import format_validation_error

__all__ = ["known_evaluators", "make_evaluator", "normal_config", "refuse_boolean"]

#: what ``true``/``false`` given where a number is meant is told, in an evaluator's configuration
#: and in an experiment file alike
_NOT_A_NUMBER = "expected a number, not a boolean"


def refuse_boolean(value: Any) -> Any:
    """``value``, unless it is ``true``/``false`` where a number is meant (a pydantic ``before``
    validator): lax pydantic read `limit: true` or `abs_tol: true` as 1 (a string such as YAML's
    `1e3` is still read as the number it spells)."""
    if isinstance(value, bool):
        raise ValueError(f"{_NOT_A_NUMBER} (got {str(value).lower()})")
    return value


#: name -> (its configuration, how to build it from that and the experiment file's folder)
_REGISTRY: dict[str, tuple[type[BaseModel], Callable[[Any, Path | None], Evaluator | PairwiseEvaluator]]] = {
    "choice": (ChoiceConfig, lambda c, _: ChoiceEvaluator(c)),
    "contains": (ContainsConfig, lambda c, _: ContainsEvaluator(c)),
    "exact": (ExactConfig, lambda c, _: ExactEvaluator(c)),
    "execution": (ExecutionConfig, lambda c, _: ExecutionEvaluator(c)),
    "f1": (F1Config, lambda c, _: F1Evaluator(c)),
    # pairwise: compares with the baseline's answer; its topology file is relative to the experiment file
    "judge": (JudgeConfig, lambda c, base_dir: JudgeEvaluator(c, base_dir=base_dir)),
    "numeric": (NumericConfig, lambda c, _: NumericEvaluator(c)),
    "regex": (RegexConfig, lambda c, _: RegexEvaluator(c)),
}


def known_evaluators() -> list[str]:
    """The names ``make_evaluator`` accepts."""
    return sorted(_REGISTRY)


def make_evaluator(
    config: str | Mapping[str, Any], *, base_dir: str | Path | None = None
) -> Evaluator | PairwiseEvaluator:
    """An evaluator from ``"exact"``, ``{"name": "numeric", "abs_tol": 1e-6}`` or
    ``{"name": "judge", "topology": "judge.yaml"}`` (files relative to ``base_dir``); ``UserError``
    naming the evaluator and field when the configuration is wrong."""
    data: dict[str, Any] = {"name": config} if isinstance(config, str) else dict(config)
    name = data.get("name")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UserError(f"unknown evaluator `{name}`; known: {', '.join(known_evaluators())}")
    config_type, build = _REGISTRY[name]
    return build(_parse(config_type, data, name), Path(base_dir) if base_dir is not None else None)


def normal_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What of an evaluator's configuration can change a score: its fields that differ from their
    defaults (a default written out or left out is the same evaluator), without the judge's
    topology *path* (``./judge.yaml``, an absolute path: its content is the judge's identity) nor
    its sandbox limits while it shows no execution. A custom or unparsable configuration as given."""
    data = dict(config)
    entry = _REGISTRY.get(str(data.get("name")))
    if entry is None or data.get("custom"):
        return data
    try:
        parsed = entry[0].model_validate(data)
    except ValidationError:
        return data
    normal = {"name": data["name"], **parsed.model_dump(mode="json", exclude_defaults=True)}
    if isinstance(parsed, JudgeConfig):
        normal.pop("topology", None)
        if not parsed.show_execution:
            normal.pop("execution", None)
    return normal


def _parse(config_type: type[BaseModel], data: dict[str, Any], name: str) -> Any:
    boolean = _boolean_number(config_type, data)
    if boolean is not None:
        # lax pydantic read `abs_tol: true` as a tolerance of 1 (every near answer scored right)
        raise UserError(f"evaluator `{name}`: field `{boolean}`: {_NOT_A_NUMBER}")
    try:
        return config_type.model_validate(data)
    except ValidationError as e:
        # as a topology file's fields are told (a misspelt one gets the closest): pydantic's own
        # "Extra inputs are not permitted" named no way out
        where, _, problem = format_validation_error(e, data, model=config_type)[0].partition(": ")
        raise UserError(f"evaluator `{name}`: field `{where}`: {problem}") from None


def _boolean_number(config_type: type[BaseModel], data: Mapping[str, Any]) -> str | None:
    """The first field (dotted) holding ``true``/``false`` where the configuration wants a number."""
    for key, value in data.items():
        field = config_type.model_fields.get(key)
        if field is None:
            continue
        kind = field.annotation
        if kind in (int, float):
            try:
                refuse_boolean(value)
            except ValueError:
                return str(key)
        if isinstance(value, Mapping) and isinstance(kind, type) and issubclass(kind, BaseModel):
            inner = _boolean_number(kind, value)
            if inner is not None:
                return f"{key}.{inner}"
    return None
