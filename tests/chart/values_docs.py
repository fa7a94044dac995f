"""The documentation of the chart's values: read from values.yaml's `# --` comments, and
written as the Values table of the chart's README.

    python -m tests.chart.values_docs    # rewrite the table after changing values.yaml
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.chart.render import CHART_DIR

VALUES_FILE = CHART_DIR / "values.yaml"
README_FILE = CHART_DIR / "README.md"
TABLE_HEADER = "| key | default | description |\n|---|---|---|\n"


def documented_keys() -> dict[str, str]:
    """Dotted key -> its `# --` description, in file order.

    A `# --` comment documents the key on the next line and may continue over plain `#`
    lines. Keys are dotted by indentation.
    """
    documented: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in VALUES_FILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if pending is not None:
            documented[dotted] = " ".join(pending)
        pending = None
    return documented


def default_of(key: str) -> Any:
    value: Any = yaml.safe_load(VALUES_FILE.read_text())
    for part in key.split("."):
        value = value[part]
    return value


def values_table() -> str:
    rows = [
        f"| `{key}` | `{json.dumps(default_of(key), separators=(',', ':'))}` | "
        f"{description.replace('|', chr(92) + '|')} |"
        for key, description in documented_keys().items()
    ]
    return TABLE_HEADER + "\n".join(rows) + "\n"


def main() -> None:
    text = README_FILE.read_text()
    start = text.index(TABLE_HEADER)
    README_FILE.write_text(text[:start] + values_table())


if __name__ == "__main__":
    main()
