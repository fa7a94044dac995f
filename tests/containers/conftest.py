"""Fixtures of the container tier: podman, the image `make container-check` built, and a
podman network per module on which containers find each other by the chart's names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.containers.pod_runner import Podman
from tests.support import require_binary

# `make container-check` builds the image and names it here; `make test` skips the tier.
IMAGE = os.environ.get("MLOPS_IMAGE", "")


@pytest.fixture(scope="session")
def podman() -> Podman:
    if not IMAGE:
        pytest.skip("`make container-check` builds the image and runs these (MLOPS_IMAGE unset)")
    tool = Podman(require_binary("podman"))
    require_binary("runc", "/usr/sbin", "/sbin")
    if tool.run("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"MLOPS_IMAGE={IMAGE} is not in podman's store: `make container-check`")
    return tool


@pytest.fixture(scope="module")
def network(podman: Podman) -> Iterator[str]:
    """A podman network of its own (DNS on: containers resolve each other's aliases)."""
    name = f"mlops-ct-{uuid.uuid4().hex[:8]}"
    podman.run("network", "create", name)
    try:
        yield name
    finally:
        podman.run("network", "rm", "--force", name, check=False)
