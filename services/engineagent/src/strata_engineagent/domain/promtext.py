"""A small, fast parser for the few families the agent reads from Prometheus text.

vLLM's `/metrics` carries ~40 families, most of them histograms with many bucket lines;
the agent needs a dozen gauges and counters every 50-100 ms per engine. The parser
looks at a line's sample name first and drops the line unless that name was asked for,
so the cost is one dict lookup for most lines. Comments (`# HELP`, `# TYPE`) are
skipped: counters are asked for by sample name (`vllm:prompt_tokens_total`), which also
keeps their `_created` samples out. OpenMetrics exemplars and timestamps are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["Sample", "parse_families"]

_SAMPLE_RE: Final = re.compile(
    r"""(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
        (?:\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?
        [ \t]+(?P<value>\S+)""",
    re.VERBOSE,
)
_LABEL_RE: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES: Final = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE_RE: Final = re.compile(r'\\[\\"n]')


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: its labels and value."""

    labels: Mapping[str, str]
    value: float


def parse_families(text: str, names: Collection[str]) -> dict[str, list[Sample]]:
    """Samples of the sample names `names` found in Prometheus text `text`.

    Args:
        text: the exposition (text format 0.0.4 or OpenMetrics).
        names: sample names to keep, e.g. `vllm:num_requests_running`, `vllm:prompt_tokens_total`.

    Returns:
        For each name present, its samples in order; absent names are missing from the dict.
        Malformed lines are skipped (a scrape never fails because of one odd line).
    """
    wanted = names if isinstance(names, (set, frozenset, dict)) else frozenset(names)
    found: dict[str, list[Sample]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = _name_end(line)
        name = line[:end]
        if name not in wanted:
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = _parse_labels(match["labels"]) if match["labels"] else {}
        if labels is None:
            continue
        found.setdefault(name, []).append(Sample(labels, value))
    return found


def _name_end(line: str) -> int:
    brace = line.find("{")
    space = line.find(" ")
    if brace < 0:
        return space if space >= 0 else len(line)
    return brace if space < 0 else min(brace, space)


def _parse_labels(text: str) -> dict[str, str] | None:
    """The labels in `text` (between the braces), or None when it is not a label list."""
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL_RE.match(text, pos)
        if match is None:
            return None if text[pos:].strip() else labels
        value = match[2]
        if "\\" in value:
            value = _ESCAPE_RE.sub(lambda esc: _ESCAPES[esc[0]], value)
        labels[match[1]] = value
        pos = match.end()
    return labels
