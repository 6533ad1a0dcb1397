import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "telegrampnl-pnls.json"


@pytest.fixture
def pnl_records() -> list[dict]:
    """190 real PNL records (11 duplicate pairs, string timestamps), as plain JSON."""
    return json.loads(DATA.read_text())
