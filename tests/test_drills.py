"""The fault drills in their shortened form: each ends with an exact accounting and fails on any
difference (drills/run.py; `bearwatch drill NAME --scale full` runs them as specified)."""

from __future__ import annotations

import pytest

from drills.run import DRILLS, SCALES


@pytest.mark.services
@pytest.mark.parametrize("name", [n for n in DRILLS if n != "disk"])
def test_drill(name: str) -> None:
    accounting = DRILLS[name](**SCALES[name]["ci"])
    assert not accounting.problems and accounting.valid > 0 and accounting.indexed == accounting.valid


def test_disk_drill() -> None:  # the embedded default: no services
    accounting = DRILLS["disk"]()
    assert not accounting.problems and accounting.indexed == accounting.valid > 0


def test_the_accounting_fails_on_a_difference() -> None:
    from drills.core import Accounting, DrillFailed

    with pytest.raises(DrillFailed, match="1 valid item"):
        Accounting(produced=2, valid=2, indexed=1, problems=["1 valid item(s) not indexed"]).check("example")
