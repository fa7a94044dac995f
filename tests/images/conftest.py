"""Run processes from the built image's file system, as the image's own user.

Containers cannot run on the CI machine (`podman run` is refused), so `make image-check`
mounts the image read-only (`podman image mount`), gives it the writable mounts a pod
gets (a tmpfs at /tmp and /dev/shm, /proc) and starts each process with `chroot` under
the image's USER, environment and working directory from its config. The network is the
host's, so the processes reach servers on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import require_binary

IMAGE = os.environ.get("MLOPS_IMAGE", "")


@dataclass(frozen=True)
class ImageRoot:
    """A mounted image and how its config says to run processes in it."""

    path: Path
    user: str
    env: dict[str, str]
    workdir: str

    def command(self, args: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        """`args` as the image's user, with only the image's environment plus `env`."""
        user, _, group = self.user.partition(":")
        variables = {**self.env, **(env or {})}
        return [
            "chroot",
            f"--userspec={user}:{group or user}",
            str(self.path),
            "/usr/bin/env",
            "-i",
            "-C",
            self.workdir,
            *(f"{key}={value}" for key, value in variables.items()),
            *args,
        ]


def _mount(kind: str, target: Path, options: str) -> None:
    subprocess.run(["mount", "-t", kind, "-o", options, kind, str(target)], check=True)


@pytest.fixture(scope="session")
def image_root() -> Iterator[ImageRoot]:
    if not IMAGE:
        pytest.skip("`make image-check` builds the image and runs these (MLOPS_IMAGE unset)")
    podman = require_binary("podman")
    require_binary("chroot")
    if os.geteuid() != 0:
        pytest.skip("mounting an image's file system needs root")
    config = json.loads(
        subprocess.run(
            [podman, "image", "inspect", "--format", "{{json .Config}}", IMAGE],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    mount_point = Path(
        subprocess.run(
            [podman, "image", "mount", IMAGE], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    mounted: list[Path] = []
    try:
        for kind, target, options in (
            ("tmpfs", "tmp", "mode=1777,size=2g"),
            ("tmpfs", "dev/shm", "mode=1777,size=256m"),
            ("proc", "proc", "ro,nosuid,nodev,noexec"),
        ):
            _mount(kind, mount_point / target, options)
            mounted.append(mount_point / target)
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        yield ImageRoot(
            path=mount_point,
            user=str(config.get("User") or "0"),
            env=env,
            workdir=config.get("WorkingDir") or "/",
        )
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False)
        subprocess.run([podman, "image", "unmount", IMAGE], check=False, capture_output=True)
