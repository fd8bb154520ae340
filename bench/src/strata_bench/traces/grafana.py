"""Request-rate time series exported from Grafana (AIBrix ``stat`` traffic files).

Accepted files:

* CSV, ``maas`` style: ``"Time","Total","Success","4xx Error"`` (``Total`` is used);
* CSV, ``cloudide`` style: ``"Time","Rate"`` (any name: the single value column is used);
* JSON: a list of row objects with the same keys; a Grafana data frame
  (``{"schema": {"fields": [...]}, "data": {"values": [[times], [values]]}}``, alone, in a
  list or under ``results.<ref>.frames``); or Prometheus range data (``[[t, "v"], ...]``,
  alone or under ``data.result[0].values``).

Times are ``2024-10-1 00:00:00``-style stamps (any :func:`parse_timestamp` form) or epoch
numbers (seconds, or milliseconds when above 1e11). Empty values count as 0, a unit
suffix (``"12.5 req/s"``) is ignored. Each value is the mean rate over its row's interval.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from strata_bench.traces.common import open_text, parse_timestamp

__all__ = ["QpsSeries", "per_second_rates", "read_grafana_qps"]

_NUMBER_RE: Final = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_TIME_KEYS: Final = ("time", "timestamp")


@dataclass(frozen=True)
class QpsSeries:
    """A sampled request-rate series.

    Attributes:
        times_s: sample times, seconds after the first sample.
        values: request rates (req/s) at those times.
        start_epoch_s: absolute time of the first sample (UTC epoch seconds).
        column: the column the values came from.
    """

    times_s: tuple[float, ...]
    values: tuple[float, ...]
    start_epoch_s: float
    column: str

    @property
    def step_s(self) -> int:
        """Sampling interval: the mean gap between samples in whole seconds (AIBrix's rule), >= 1."""
        if len(self.times_s) < 2:
            return 1
        return max(1, int((self.times_s[-1] - self.times_s[0]) / (len(self.times_s) - 1)))


def read_grafana_qps(path: str | Path, *, column: str | None = None) -> QpsSeries:
    """Read a rate series from a Grafana CSV or JSON export (format from the content).

    Args:
        path: the export.
        column: value column to use; default ``Total`` when present, else the only
            non-time column.

    Raises:
        ValueError: no time column, an ambiguous or missing value column, or no rows.
    """
    with open_text(path) as f:
        text = f.read()
    if text.lstrip().startswith(("[", "{")):
        rows = _json_rows(orjson.loads(text))
    else:
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    if not rows:
        raise ValueError(f"{path}: no rows")
    keys = [k for k in rows[0] if k is not None]
    time_key = next((k for k in keys if k.strip().lower() in _TIME_KEYS), None)
    if time_key is None:
        raise ValueError(f"{path}: no Time column in {keys}")
    value_key = _value_column(keys, time_key, column, path)
    stamps = [_epoch(row[time_key]) for row in rows]
    start = stamps[0]
    return QpsSeries(
        times_s=tuple(t - start for t in stamps),
        values=tuple(_number(row.get(value_key)) for row in rows),
        start_epoch_s=start,
        column=value_key.strip(),
    )


def per_second_rates(series: QpsSeries, *, qps_scale: float = 1.0, step_s: int | None = None) -> list[float]:
    """Expand a series into one rate per second, each sample held for its interval.

    Args:
        series: the exported series.
        qps_scale: rates are **divided** by it (AIBrix ``--qps-scale``: 80 with 10 gives 8).
        step_s: seconds each sample covers; default :attr:`QpsSeries.step_s`.

    Raises:
        ValueError: a non-positive scale or step.
    """
    step = series.step_s if step_s is None else step_s
    if qps_scale <= 0 or step < 1:
        raise ValueError(f"qps_scale and step_s must be positive, got {qps_scale}, {step}")
    return [max(0.0, value) / qps_scale for value in series.values for _ in range(step)]


def _value_column(keys: Sequence[str], time_key: str, column: str | None, path: str | Path) -> str:
    by_name = {k.strip(): k for k in keys if k != time_key}
    if column is not None:
        if column not in by_name:
            raise ValueError(f"{path}: no column {column!r} in {sorted(by_name)}")
        return by_name[column]
    if "Total" in by_name:
        return by_name["Total"]
    if len(by_name) == 1:
        return next(iter(by_name.values()))
    raise ValueError(f"{path}: several value columns {sorted(by_name)}; name one")


def _json_rows(data: Any) -> list[dict[str, Any]]:
    """Normalise the JSON forms to row dicts keyed by column name."""
    if isinstance(data, dict) and "results" in data:
        frames = [fr for ref in data["results"].values() for fr in ref.get("frames", [])]
        return _json_rows(frames)
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "result" in data["data"]:
        return _json_rows(data["data"]["result"][0]["values"])
    if isinstance(data, dict) and "schema" in data:
        names = [str(f.get("name") or f"field{i}") for i, f in enumerate(data["schema"]["fields"])]
        if names and names[0].lower() not in _TIME_KEYS:
            names[0] = "Time"
        columns = data["data"]["values"]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "schema" in data[0]:
        return _json_rows(data[0])
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [{"Time": pair[0], "Rate": pair[1]} for pair in data]
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return [dict(row) for row in data]
    raise ValueError("unrecognised Grafana JSON export")


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return value / 1000.0 if value > 1e11 else float(value)
    text = str(value).strip()
    if _NUMBER_RE.fullmatch(text):
        return _epoch(float(text))
    whole, frac = parse_timestamp(text)
    return whole + frac


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    match = _NUMBER_RE.match(str(value))
    return float(match.group(1)) if match else 0.0
