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


def named_paths(page: Path) -> list[str]:
    """The checkout's files a page names in code spans: `firmware/...`, `meter/...` (inside
    firmware/), `simulator/...`, `host_tools/...`, `boards/...`, `tests/...`."""
    top = r"(?:firmware|meter|simulator|host_tools|boards|tests)/"
    return re.findall(rf"`({top}[\w./]*\w)`", page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_source_path_exists(page):
    names = named_paths(page)
    missing = [name for name in names
               if not (ROOT / name).exists() and not (ROOT / "firmware" / name).exists()]
    assert missing == []


def resolves(name: str, firmware: Path) -> bool:
    """A dotted firmware name (`meter.storage.ring`, `meter.app.current`) leads through its
    packages to a module (what follows the module may be an attribute) or a package."""
    where = firmware / "meter"
    for part in name.split(".")[1:]:
        if (where / part).is_dir():
            where = where / part
        else:
            return (where / f"{part}.py").exists()
    return True


def missing_modules(text: str, firmware: Path) -> list[str]:
    """Dotted firmware names in code spans that lead nowhere; and, in a table row for a
    subpackage (| `meter/X/` | ...), each file named that is not in it."""
    spans = INLINE.findall(FENCE.sub("", text))
    missing = [name for span in spans for name in re.findall(r"\bmeter(?:\.\w+)+", span)
               if not resolves(name, firmware)]
    for folder, row in re.findall(r"^\| `(?:firmware/)?meter/(\w+)/` \|(.*)$", text, re.M):
        missing += [f"meter/{folder}/{name}" for name in re.findall(r"`(\w+\.py)`", row)
                    if not (firmware / "meter" / folder / name).exists()]
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_firmware_module_exists(page):
    assert missing_modules(page.read_text(), ROOT / "firmware") == []


def test_a_stale_module_name_is_found(tmp_path):
    (tmp_path / "meter" / "storage").mkdir(parents=True)
    (tmp_path / "meter" / "app.py").write_text("")
    (tmp_path / "meter" / "storage" / "ring.py").write_text("")
    text = ("`meter.app.current` `meter.storage.ring` `meter.storage` `meter.store` "
            "`meter.storage.rings.unload`\n| `meter/storage/` | `ring.py`, `events.py` |\n")
    assert missing_modules(text, tmp_path) == ["meter.store", "meter.storage.rings.unload",
                                               "meter/storage/events.py"]
