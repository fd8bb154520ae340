"""Subject builders: versioned, one token per id, wildcards match the builders."""

from __future__ import annotations

import pytest

from strata_contracts import subjects


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (subjects.engine_load("e-1"), "strata.engine.v1.load.e-1"),
        (subjects.kv_events("e-1"), "strata.kv.v1.events.e-1"),
        (subjects.cache_placement("c_2"), "strata.cache.v1.placement.c_2"),
        (subjects.usage("acme"), "strata.usage.v1.acme"),
    ],
)
def test_builders(built: str, expected: str) -> None:
    assert built == expected


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "has space", "tab\t", "ü", "host:8000", "kv@x"])
def test_invalid_tokens_rejected(bad: str) -> None:
    with pytest.raises(subjects.InvalidToken, match="engine id"):
        subjects.engine_load(bad)


@pytest.mark.parametrize(
    ("wildcard", "subject"),
    [
        (subjects.ENGINE_LOAD_ALL, subjects.engine_load("x")),
        (subjects.KV_EVENTS_ALL, subjects.kv_events("x")),
        (subjects.CACHE_PLACEMENT_ALL, subjects.cache_placement("x")),
        (subjects.USAGE_ALL, subjects.usage("x")),
    ],
)
def test_wildcards_match_their_builders(wildcard: str, subject: str) -> None:
    assert wildcard.split(".")[:-1] == subject.split(".")[:-1]
    assert wildcard.endswith(".*")


def test_every_subject_is_versioned() -> None:
    names = [v for k, v in vars(subjects).items() if k.isupper() and isinstance(v, str) and v.startswith("strata.")]
    assert names
    assert all(".v1." in name or name.endswith(".v1") for name in names)
