"""BurstGPT traces (v1/v2 and v3 column sets), columns matched by name.

v1/v2: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``;
v3 adds ``Session ID`` and ``Elapsed time`` (``Timestamp,Session ID,Elapsed time,Model,...``).
``Timestamp`` is float seconds since 0:00 of day 1 (kept as ``at_s``); ``Session ID`` is
set only for conversation logs; ``Elapsed time`` is submit to full response in seconds.
Failed requests are logged with ``Response tokens`` = 0 (the ``_without_fails`` files
drop them); :func:`read_burstgpt` can drop them too.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from strata_bench.traces.common import TraceRow, open_text

__all__ = ["BurstGPTRow", "read_burstgpt"]

_REQUIRED: Final = ("timestamp", "model", "request tokens", "response tokens")


@dataclass(frozen=True)
class BurstGPTRow(TraceRow):
    """One BurstGPT request (``input_tokens`` = Request tokens, ``output_tokens`` = Response tokens).

    Attributes:
        model: ``ChatGPT`` or ``GPT-4``.
        log_type: ``Conversation log`` or ``API log`` ("" when the column is absent).
        total_tokens: the trace's own total (input + output).
        session_id: conversation id (v3 conversation logs only).
        elapsed_s: submit to full response, seconds (v3 only).
    """

    model: str = ""
    log_type: str = ""
    total_tokens: int = 0
    session_id: str | None = None
    elapsed_s: float | None = None

    @property
    def failed(self) -> bool:
        """A failed request: BurstGPT logs those with 0 response tokens."""
        return self.output_tokens == 0


def read_burstgpt(
    path: str | Path,
    *,
    drop_failures: bool = False,
    models: Collection[str] | None = None,
    log_types: Collection[str] | None = None,
) -> Iterator[BurstGPTRow]:
    """Stream the rows of a BurstGPT CSV of any version.

    Args:
        path: the CSV (``.csv`` or ``.csv.gz``).
        drop_failures: skip rows with 0 response tokens.
        models: keep only these models (e.g. ``{"GPT-4"}``).
        log_types: keep only these log types (e.g. ``{"Conversation log"}``).

    Raises:
        ValueError: a required column is missing, or a row does not parse (line named).
    """
    with open_text(path) as f:
        reader = csv.DictReader(f)
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        missing = [name for name in _REQUIRED if name not in fields]
        if missing:
            raise ValueError(f"{path}: not a BurstGPT trace, missing columns {missing}")
        for raw in reader:
            try:
                row = _row({key: raw[name] for key, name in fields.items()})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{reader.line_num}: {exc}") from exc
            if drop_failures and row.failed:
                continue
            if models is not None and row.model not in models:
                continue
            if log_types is not None and row.log_type not in log_types:
                continue
            yield row


def _row(values: dict[str, str]) -> BurstGPTRow:
    request = _count(values["request tokens"])
    response = _count(values["response tokens"])
    total = values.get("total tokens", "").strip()
    session = values.get("session id", "").strip()
    elapsed = values.get("elapsed time", "").strip()
    return BurstGPTRow(
        at_s=float(values["timestamp"]),
        input_tokens=request,
        output_tokens=response,
        model=values["model"].strip(),
        log_type=values.get("log type", "").strip(),
        total_tokens=_count(total) if total else request + response,
        session_id=session if session and session.lower() != "nan" else None,
        elapsed_s=float(elapsed) if elapsed and elapsed.lower() != "nan" else None,
    )


def _count(text: str) -> int:
    """A token count that may be written as a float (``"472.0"``)."""
    return int(float(text))
