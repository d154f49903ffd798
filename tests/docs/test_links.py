"""README.md and docs/*.md: every relative link points at a file of the repository (and a heading of it, for
`#anchor` links); README has no link outside the repository and stays at most 150 lines."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.docs.markdown import ROOT, anchors, links, prose_lines

pytestmark = pytest.mark.unit

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150


def external(target: str) -> bool:
    parts = urlsplit(target)
    return bool(parts.scheme or parts.netloc) or target.startswith("//")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for line, target in links(page.read_text()):
        if external(target):
            continue
        parts = urlsplit(target)
        path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not path.is_relative_to(ROOT):
            broken.append(f"{page.name}:{line}: {target} leaves the repository")
        elif not path.exists():
            broken.append(f"{page.name}:{line}: {target}: no such file")
        elif parts.fragment and path.suffix == ".md" and parts.fragment not in anchors(path.read_text()):
            broken.append(f"{page.name}:{line}: {target}: no heading #{parts.fragment} in {path.name}")
    assert not broken, "\n".join(broken)


def test_readme_links_stay_in_the_repository() -> None:
    text = README.read_text()
    outside = [f"README.md:{line}: {target}" for line, target in links(text) if external(target)]
    # Bare addresses outside code become links on GitHub too.
    outside += [
        f"README.md:{line}: {word}"
        for line, prose in prose_lines(text)
        for word in prose.split()
        if "://" in word or word.startswith("www.")
    ]
    assert not outside, "README links outside the repository:\n" + "\n".join(outside)


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_links_every_page_of_docs() -> None:
    linked = {(README.parent / urlsplit(t).path).resolve() for _, t in links(README.read_text()) if not external(t)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md does not link docs/{missing}"
