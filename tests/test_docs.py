"""The README is a door (at most ~200 lines) and every relative link in it and in docs/ resolves."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_a_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "#")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            titles = {re.sub(r"[^\w\- ]", "", h.strip("# ").lower()).replace(" ", "-")
                      for h in resolved.read_text().splitlines() if h.startswith("#")}
            if anchor not in titles:
                broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"
