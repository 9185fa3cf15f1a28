"""The hostile-case registry stays consistent: unique ids, each claimed by a test, each in RELIABILITY.md."""

import re
from pathlib import Path

from digitlab.testing import hostile

REPO = Path(__file__).resolve().parents[1]


def test_case_ids_are_unique_and_named_after_their_area():
    ids = [c.id for c in hostile.CASES]
    assert len(ids) == len(set(ids))
    for c in hostile.CASES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", c.id) and c.id.startswith(f"{c.area}-"), c.id
        assert c.tried and c.expected


def test_every_case_is_claimed_by_a_test():
    """By its id in a hostile mark, or by parametrizing over its whole area (read from the test sources)."""
    sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    areas = set(re.findall(r"hostile\.area\(\"([a-z0-9]+)\"\)", sources))
    if "hostile(image_case_id(" in sources:  # tests/test_image.py marks every IMAGE_INPUTS entry
        areas.add("image")
    unclaimed = [c.id for c in hostile.CASES if f'"{c.id}"' not in sources and c.area not in areas]
    assert not unclaimed, f"no test claims {unclaimed}"


def test_reliability_md_lists_every_case():
    text = (REPO / "RELIABILITY.md").read_text()
    missing = [c.id for c in hostile.CASES if f"`{c.id}`" not in text]
    assert not missing, f"run `python scripts/reliability_table.py`: RELIABILITY.md lacks {missing}"
