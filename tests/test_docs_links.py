"""The README stays a short front page, and the documentation's links resolve.

README.md is at most 220 lines, its first section is the two commands (`make demo`, `make
test`, both Makefile targets), every file of docs/ is linked from it, and every relative link in
README.md and docs/*.md points to a file that exists (and, for a `#fragment` into a markdown
file, to one of that file's headings, slugged as GitHub does).
"""

import collections
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
MAX_README_LINES = 220

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def _anchors(path: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings (duplicates get -1, -2, ...)."""
    seen = collections.Counter()
    anchors = set()
    fenced = False
    for line in _read(path).split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def _doc_files() -> list[str]:
    return sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))


def _relative_links(path: str) -> list[str]:
    links = []
    for line in _prose_lines(_read(path)):
        links += [target for target in LINK.findall(line)
                  if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]   # http:, https:, mailto:
    return links


def test_readme_is_short():
    lines = _read(README).rstrip("\n").count("\n") + 1
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"


def test_the_two_commands_come_first():
    text = _read(README)
    sections = [line for line in _prose_lines(text) if line.startswith("## ")]
    assert sections and sections[0].startswith("## Two commands"), sections[:1]
    first = text[text.index(sections[0]):]
    block = re.search(r"```bash\n(.*?)```", first, re.S).group(1).split("\n")
    assert block[0].startswith("make demo") and block[1].startswith("make test"), block[:2]
    makefile = _read(os.path.join(ROOT, "Makefile"))
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target!r}"


def test_every_doc_is_linked_from_the_readme():
    linked = {os.path.normpath(os.path.join(ROOT, target.split("#")[0]))
              for target in _relative_links(README)}
    missing = [os.path.relpath(path, ROOT) for path in _doc_files() if path not in linked]
    assert not missing, f"not linked from README.md: {missing}"


@pytest.mark.parametrize("path", [README, *_doc_files()], ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(path):
    broken = []
    for target in _relative_links(path):
        file_part, _, fragment = target.partition("#")
        resolved = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                    if file_part else path)
        if not os.path.exists(resolved):
            broken.append(f"{target} (no such file)")
        elif fragment and resolved.endswith(".md") and fragment not in _anchors(resolved):
            broken.append(f"{target} (no heading #{fragment})")
    assert not broken, f"{os.path.relpath(path, ROOT)}: broken links: {broken}"
