"""README.md and docs/: every relative link and heading anchor resolves; the README stays short.

Anchors follow GitHub's rule (lower case, punctuation dropped, spaces to hyphens, a
repeated heading numbered), so a link that works here works on the rendered page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
README_MAX_LINES = 260

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The numbered lines outside fenced code (a `#` there is a shell comment, no heading)."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: "What `make kind-up` installs" -> what-make-kind-up-installs"""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link of `path` whose file or heading anchor does not exist, with why."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if EXTERNAL.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}:{number}: link {target!r}: no file {linked}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(
                    f"{path.name}:{number}: link {target!r}: {linked.name} has no heading "
                    f"with anchor #{anchor} (it has: {', '.join(sorted(anchors(linked)))})"
                )
            elif anchor and linked.suffix != ".md":
                problems.append(f"{path.name}:{number}: link {target!r}: anchor outside Markdown")
    return problems


def test_docs_folder_holds_the_pages_the_readme_promises() -> None:
    names = {p.name for p in DOCS}
    assert {"design.md", "serving.md", "rollouts.md", "kubernetes.md", "performance.md"} <= names


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_readme_stays_short_with_quick_start_and_test_command() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move the detail "
        "into docs/ and link it"
    )
    first_screen = "\n".join(lines[:60])
    assert "make demo" in first_screen
    assert "make test" in "\n".join(lines)


def test_every_doc_is_linked_from_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in DOCS if f"(docs/{p.name}" not in text]
    assert unlinked == []


def test_checker_reports_a_missing_file_a_missing_anchor_and_ignores_code(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A `make` target: here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#a-make-target-here) [self](#page) [web](https://example.org/x.md)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [no self anchor](#elsewhere)\n"
        "`[in code](missing-too.md)`\n"
        "```\n[in a fence](missing-three.md)\n```\n"
    )
    problems = broken_links(page)
    assert len(problems) == 3
    assert problems[0].startswith("page.md:4: link 'missing.md'")
    assert "'other.md#nowhere'" in problems[1] and "a-make-target-here" in problems[1]
    assert "'#elsewhere'" in problems[2]


def test_slug_follows_github_for_punctuation_and_repeats(tmp_path: Path) -> None:
    # an en dash, as in rollouts.md's "Jensen\u2013Shannon": GitHub drops it
    assert slug("The drift measure: Jensen\u2013Shannon distance") == (
        "the-drift-measure-jensenshannon-distance"
    )
    assert slug("`auto`") == "auto"
    page = tmp_path / "repeat.md"
    page.write_text("# Tests\n\n## Tests\n\n```\n# not a heading\n```\n")
    assert anchors(page) == {"tests", "tests-1"}
