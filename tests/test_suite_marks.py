"""The list of slow cases names tests that exist: a renamed test would silently run again in
every developer's quick local run otherwise."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SLOW

TESTS = Path(__file__).parent


def test_every_slow_case_names_a_test_function_that_exists() -> None:
    missing = []
    for case in sorted(SLOW):
        module, name = case.split("::")
        source = (TESTS / module).read_text() if (TESTS / module).is_file() else ""
        if f"def {name}(" not in source:
            missing.append(case)
    assert not missing, missing
