"""Azure LLM inference traces: 2023 (Splitwise), 2024 (DynamoLLM) and 2025 multimodal.

CSV ``TIMESTAMP,ContextTokens,GeneratedTokens`` (the 2025 multimodal file adds
``NumImages`` and is gzipped). Timestamps differ between releases:

* 2023: ``2023-11-16 18:15:46.6805900`` (7 fractional digits, no zone);
* 2024: ``2024-05-10 00:00:00.009930+00:00``, some rows without the fraction.

Columns are matched by name, so order and extra columns do not matter. ``at_s`` is the
time since the first row; ``epoch_s`` keeps the absolute time (naive stamps read as UTC)
for diurnal analysis.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from strata_bench.traces.common import TraceRow, open_text, parse_timestamp

__all__ = ["AzureRow", "read_azure"]


@dataclass(frozen=True)
class AzureRow(TraceRow):
    """One Azure request (``input_tokens`` = ContextTokens, ``output_tokens`` = GeneratedTokens).

    Attributes:
        epoch_s: absolute time, seconds since the Unix epoch (UTC).
        num_images: images in the request (multimodal trace only).
    """

    epoch_s: float = 0.0
    num_images: int | None = None


def read_azure(path: str | Path) -> Iterator[AzureRow]:
    """Stream the rows of an Azure trace CSV (``.csv`` or ``.csv.gz``).

    Raises:
        ValueError: a required column is missing, or a row does not parse (line named).
    """
    with open_text(path) as f:
        reader = csv.DictReader(f)
        fields = {name.strip(): name for name in reader.fieldnames or []}
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(fields)
        if missing:
            raise ValueError(f"{path}: not an Azure LLM trace, missing columns {sorted(missing)}")
        ts_key, in_key, out_key = fields["TIMESTAMP"], fields["ContextTokens"], fields["GeneratedTokens"]
        img_key = fields.get("NumImages")
        origin: tuple[int, float] | None = None
        for row in reader:
            try:
                whole, frac = parse_timestamp(row[ts_key])
                if origin is None:
                    origin = (whole, frac)
                yield AzureRow(
                    at_s=(whole - origin[0]) + (frac - origin[1]),
                    input_tokens=int(row[in_key]),
                    output_tokens=int(row[out_key]),
                    epoch_s=whole + frac,
                    num_images=int(row[img_key]) if img_key is not None and row[img_key] else None,
                )
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{reader.line_num}: {exc}") from exc
