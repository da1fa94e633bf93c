"""CI's second pass runs, without the shared data, the tests that looked at it in the first pass: a
look through tests.helpers or any other way (a file opened, a folder listed) is noted there
(tests/conftest.py)."""

import os

import pytest

from tests import helpers


def noted(look) -> bool:
    helpers.LOOKED[0] = False
    look()
    return helpers.LOOKED[0]


def test_every_way_of_looking_at_the_shared_data_is_noted():
    assert noted(lambda: helpers.has(helpers.SAMPLES))
    assert not noted(lambda: open(__file__, "rb").close())  # a file elsewhere is not the shared data
    if not helpers.SAMPLES.exists():
        pytest.skip(f"real test data not found at {helpers.SAMPLES}: only the first pass, with it, records looks")
    assert noted(lambda: open(helpers.SHARED / "README.md", "rb").close())
    assert noted(lambda: os.listdir(helpers.SHARED))
    assert noted(lambda: list(helpers.SAMPLES.glob("*.JPEG")))
