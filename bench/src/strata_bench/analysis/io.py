"""Run directories: per-request JSONL, summary JSON and run metadata.

Layout of a run directory (every metric can be recomputed from ``records.jsonl`` alone)::

    <run_dir>/records.jsonl   one RequestRecord per line (times in s from the run start)
    <run_dir>/summary.json    Summary.to_dict()
    <run_dir>/run.json        metadata: endpoint, load settings, offered rate, stop reason, …
    <run_dir>/*.png           plots (strata_bench.analysis.plots)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from strata_bench.analysis.summary import Summary
from strata_bench.model import RequestRecord

__all__ = [
    "RECORDS_FILE",
    "RUN_FILE",
    "SUMMARY_FILE",
    "read_json",
    "read_records",
    "read_summary",
    "write_json",
    "write_records",
]

RECORDS_FILE: Final = "records.jsonl"
SUMMARY_FILE: Final = "summary.json"
RUN_FILE: Final = "run.json"
_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestRecord))


def write_records(path: str | Path, records: Iterable[RequestRecord]) -> None:
    """Write one JSON object per record (creates parent directories)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for rec in records:
            f.write(orjson.dumps(dataclasses.asdict(rec)) + b"\n")


def read_records(path: str | Path) -> list[RequestRecord]:
    """Read records written by :func:`write_records` (a run directory is accepted too).

    Raises:
        ValueError: a line has fields a RequestRecord does not (named with the line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    out: list[RequestRecord] = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                obj = orjson.loads(line)
                if unknown := set(obj) - _RECORD_FIELDS:
                    raise ValueError(f"{path}:{lineno}: unknown RequestRecord fields {sorted(unknown)}")
                out.append(RequestRecord(**obj))
    return out


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON (creates parent directories)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object; ``{}`` when the file does not exist (e.g. a run without run.json)."""
    path = Path(path)
    if not path.exists():
        return {}
    data = orjson.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_summary(run_dir: str | Path) -> Summary:
    """The summary of a run directory."""
    return Summary.from_dict(read_json(Path(run_dir) / SUMMARY_FILE))
