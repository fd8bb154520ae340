"""What every trace reader shares: the row base type, time helpers and file opening.

Every reader yields frozen dataclasses derived from :class:`TraceRow`: ``at_s`` is the
request's time in seconds from the trace's own origin (first row for Azure, midnight of
day 1 for BurstGPT, the trace start for Mooncake), and ``input_tokens`` /
``output_tokens`` its lengths, whatever the source columns are called. Readers stream
(the Azure 2024 files hold 17-27 M rows); the helpers below stay lazy too.

Time helpers, applied in this order when combined::

    truncate(rebase(rows), max_s=600)      first 10 minutes, starting at 0
    scale_time(rows, 0.5)                  the same arrivals twice as fast
"""

from __future__ import annotations

import calendar
import dataclasses
import gzip
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, TypeVar

__all__ = [
    "TraceRow",
    "open_text",
    "parse_timestamp",
    "rebase",
    "scale_time",
    "truncate",
]

_TIMESTAMP_RE: Final = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\s*"
)


@dataclass(frozen=True)
class TraceRow:
    """One request of a trace.

    Attributes:
        at_s: arrival time, seconds from the trace's origin.
        input_tokens: prompt length in tokens.
        output_tokens: output length in tokens.
    """

    at_s: float
    input_tokens: int
    output_tokens: int


RowT = TypeVar("RowT", bound=TraceRow)


def scale_time(rows: Iterable[RowT], factor: float) -> Iterator[RowT]:
    """Multiply every ``at_s`` by `factor` (0.5 = replay twice as fast; lengths unchanged).

    Raises:
        ValueError: `factor` is not positive.
    """
    if factor <= 0:
        raise ValueError(f"time scale factor must be > 0, got {factor}")
    for row in rows:
        yield dataclasses.replace(row, at_s=row.at_s * factor)


def rebase(rows: Iterable[RowT]) -> Iterator[RowT]:
    """Shift times so the first row is at 0."""
    origin: float | None = None
    for row in rows:
        if origin is None:
            origin = row.at_s
        yield dataclasses.replace(row, at_s=row.at_s - origin)


def truncate(rows: Iterable[RowT], *, max_s: float | None = None, max_n: int | None = None) -> Iterator[RowT]:
    """The rows within `max_s` seconds of the first row, at most `max_n` of them.

    Rows are assumed to be in time order (true of every public trace here): reading stops
    at the first row past the window, so only the head of a large file is parsed.
    """
    if max_n is not None and max_n <= 0:
        return
    origin: float | None = None
    for count, row in enumerate(rows, 1):
        if origin is None:
            origin = row.at_s
        if max_s is not None and row.at_s - origin >= max_s:
            return
        yield row
        if max_n is not None and count >= max_n:
            return


def parse_timestamp(text: str) -> tuple[int, float]:
    """Parse a trace timestamp into whole epoch seconds (UTC) and the fraction of a second.

    Accepts ``2023-11-16 18:15:46.6805900`` (7 digits, no zone: taken as UTC),
    ``2024-05-10 00:00:00.009930+00:00``, the same without a fraction, ``T`` separators,
    ``Z`` and unpadded fields (``2024-10-1 00:00:00``). The split keeps sub-microsecond
    precision that a single float of epoch seconds would lose.

    Raises:
        ValueError: the text is not such a timestamp.
    """
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"unrecognised timestamp {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    whole = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second or 0), 0, 0, 0))
    if zone and zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        whole -= offset if zone[0] == "+" else -offset
    return whole, float(f"0.{fraction}") if fraction else 0.0


def open_text(path: str | Path) -> IO[str]:
    """Open a text trace for reading, transparently gunzipping ``*.gz`` files."""
    file = Path(path)
    if file.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(file, "rb"), encoding="utf-8", newline="")
    return file.open(encoding="utf-8", newline="")
