"""README.md and docs/*.md hold together: every relative link reaches a file of the checkout
(and, when it names one, a heading of that page), and every `make TARGET` they print is a
target of the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The page without its code: links inside code are not links."""
    return INLINE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z]+:", target)]  # http:, https:, mailto: are not ours


def broken(page: Path, root: Path = ROOT) -> list[str]:
    bad = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(root) or not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(page):
    assert broken(page) == []


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("## Live: `make sim`\n")
    page.write_text("# A page\n\n[ok](#a-page) [gone](missing.md) [no](#nowhere)\n"
                    "[there](other.md#live-make-sim) [up](../x.md) `[code](skipped.md)`\n")
    assert broken(page, tmp_path) == ["missing.md: no such file",
                                      "#nowhere: no heading #nowhere in page.md",
                                      "../x.md: no such file"]


def test_every_printed_make_target_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    printed = []
    for page in PAGES:
        text = page.read_text()
        code = "\n".join(FENCE.findall(text) + INLINE.findall(text))
        printed += re.findall(r"(?:^|[`\s|])make ([a-z][\w-]*)", code, re.M)
    assert {"sim", "test", "bench"} <= set(printed)
    assert sorted(set(printed) - targets) == []
