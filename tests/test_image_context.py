"""The image's build context: `.dockerignore` keeps everything out but what it lets in, so
each package the Dockerfile copies must be let in too (else `COPY` fails, and only the
container tier would say so, minutes into the build)."""

from __future__ import annotations

import re
import tomllib

from tests.support import REPO_ROOT


def copied_from_the_context() -> list[str]:
    """The sources of every `COPY` that reads the build context (not `--from=` a stage)."""
    sources = []
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        words = [w for w in line.split()[1:] if not w.startswith("--")]
        sources += words[:-1]
    return sources


def let_in() -> list[str]:
    return [
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]


def test_every_source_the_dockerfile_copies_is_in_the_build_context() -> None:
    allowed = let_in()
    sources = copied_from_the_context()
    assert sources, "no COPY from the build context found in the Dockerfile"
    missing = [
        s for s in sources if not any(s.rstrip("/") == a or s.startswith(a + "/") for a in allowed)
    ]
    assert not missing, f".dockerignore keeps {missing} out of the build context: add !{missing[0]}"


def test_every_package_of_the_distribution_is_copied_into_the_image() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = [
        re.sub(r"\*$", "", p)
        for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = {s.rstrip("/") for s in copied_from_the_context()}
    assert set(packages) <= copied, f"the Dockerfile copies none of {set(packages) - copied}"
