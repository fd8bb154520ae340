"""Find, load and validate scenario files; shrink one for ``--quick``.

A scenario is named by a file stem in ``defs/`` (``seed-workload-1``) or given as a path.
Every error names the file and the offending key, e.g.
``seed-workload-1.yaml: unknown key 'qsp' at workload.qsp``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from strata_bench.scenarios.schema import MultiturnSpec, PrefixSharingSpec, Scenario

__all__ = [
    "DEFS_DIR",
    "LoadedScenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "quick_variant",
    "scenario_names",
]

DEFS_DIR = Path(__file__).parent / "defs"
"""Where the shipped scenarios live."""

_QUICK_WALL_S = 2.0  # wall seconds of arrivals per point in --quick runs
_QUICK_DRAIN_WALL_S = 4.0


class ScenarioError(ValueError):
    """A scenario could not be found or is invalid (the message names the file and key)."""


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario and where it came from.

    Attributes:
        scenario: the validated content.
        path: the file.
        sha256: hash of the file's bytes (recorded with every result: a changed file is a
            different experiment even under the same name).
        quick: whether :func:`quick_variant` shrank it.
    """

    scenario: Scenario
    path: Path
    sha256: str
    quick: bool = False


def scenario_names() -> list[str]:
    """Names of the shipped scenarios, sorted."""
    return sorted(p.stem for p in DEFS_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ScenarioError(f"scenario file {candidate} does not exist")
        return candidate
    shipped = DEFS_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ScenarioError(f"unknown scenario {str(name_or_path)!r}; shipped: {', '.join(scenario_names())}")
    return shipped


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {str(err['loc'][-1])!r} at {where}")
        else:
            lines.append(f"{source}: {where}: {err['msg']}")
    return "\n".join(lines)


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate already-parsed YAML.

    Raises:
        ScenarioError: not a mapping, wrong ``version``, or any schema error (key named).
    """
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping, got {type(data).__name__}")
    if data.get("version") != 1:
        raise ScenarioError(f"{source}: version must be 1 (this schema), got {data.get('version')!r}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_describe(exc, source)) from None


def load_scenario(name_or_path: str | Path) -> LoadedScenario:
    """Load a shipped scenario by name, or a scenario file by path.

    Raises:
        ScenarioError: unknown name, unreadable YAML, or an invalid scenario.
    """
    path = _resolve(name_or_path)
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path.name}: not valid YAML: {exc}") from None
    scenario = parse_scenario(data, path.name)
    return LoadedScenario(scenario, path, hashlib.sha256(raw).hexdigest())


def quick_variant(loaded: LoadedScenario) -> LoadedScenario:
    """The smoke-run version of a scenario: the ``quick`` block's values, else the first and
    last rate, about two wall seconds of arrivals and four of drain per point, and a
    smaller dataset where the block says so. Everything else (fleet, shapes) is unchanged.
    """
    s = loaded.scenario
    q, w, scale = s.quick, s.workload, s.fleet.time_scale
    rates = w.rates()
    qps = q.qps or sorted({rates[0], rates[-1]})
    workload = w.model_copy(
        update={
            "qps": qps,
            "duration_s": q.duration_s or min(w.duration_s, _QUICK_WALL_S * scale),
            "drain_s": q.drain_s if q.drain_s is not None else min(w.drain_s, _QUICK_DRAIN_WALL_S * scale),
            "ramp_s": 0.0,
            "think_time_s": q.think_time_s if q.think_time_s is not None else w.think_time_s,
        }
    )
    dataset = s.dataset
    if isinstance(dataset, MultiturnSpec) and q.sessions is not None:
        dataset = dataset.model_copy(update={"sessions": min(dataset.sessions, q.sessions)})
    elif isinstance(dataset, PrefixSharingSpec) and q.num_prefix_scale is not None:
        configs = [
            c.model_copy(update={"num_prefix": max(1, round(c.num_prefix * q.num_prefix_scale))})
            for c in dataset.configs
        ]
        dataset = dataset.model_copy(update={"configs": configs})
    quick = s.model_copy(update={"workload": workload, "dataset": dataset})
    return LoadedScenario(quick, loaded.path, loaded.sha256, quick=True)
