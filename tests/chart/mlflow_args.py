"""The MLflow server exactly as the chart starts it, moved onto this machine.

Only what a pod has and a test process has not is changed: the volume's mount point
(`/mlflow`) and the emptyDir (`/tmp`) become local folders, and the server binds
127.0.0.1 on a free port instead of 0.0.0.0:5000. Every other argument, and every
environment variable the chart sets by value, is passed through unchanged; variables the
chart reads from Secrets are supplied by the test, as the Secrets would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chart.render import Rendered


@dataclass(frozen=True)
class ServerCommand:
    args: list[str]
    env: dict[str, str]
    secret_env: list[str]
    """Names the chart reads from Secrets; the caller must supply them."""


def mlflow_container(rendered: Rendered, name: str = "mlflow") -> dict[str, Any]:
    """A container of MLflow's pod: the server (`mlflow`) or its metrics sidecar."""
    deployment = rendered.one("Deployment", "-mlflow")
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                   if c["name"] == name]  # fmt: skip
    found: dict[str, Any] = container
    return found


AUTH_CONFIG = "/etc/mlflow-auth"


def local_mlflow_command(
    rendered: Rendered, *, data_dir: Path, tmp_dir: Path, port: int
) -> ServerCommand:
    """With `mlflow.auth` on, the auth ConfigMap is written to `tmp_dir/../auth-config`
    (its paths made local too) as the volume would mount it."""
    container = mlflow_container(rendered)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) - {AUTH_CONFIG} == {"/mlflow", "/tmp"}, f"unexpected mounts {mounts}"
    config_dir = tmp_dir.parent / "auth-config"
    folders = {
        "/mlflow/": f"{data_dir}/",
        "/tmp/": f"{tmp_dir}/",
        f"{AUTH_CONFIG}/": f"{config_dir}/",
    }

    def local(value: str) -> str:
        # Absolute paths only (`s3://mlflow/...` is a bucket), in one pass so a local
        # folder under /tmp is not rewritten a second time.
        return re.sub(
            r"(^|=|sqlite:///)(/mlflow/|/tmp/|/etc/mlflow-auth/)",
            lambda m: m.group(1) + folders[m.group(2)],
            value,
        )

    if AUTH_CONFIG in mounts:
        config_dir.mkdir(exist_ok=True)
        for file_name, text in rendered.one("ConfigMap", "-auth")["data"].items():
            lines = [local(line.replace(" = ", "=", 1)).replace("=", " = ", 1) if " = " in line
                     else line for line in text.splitlines()]  # fmt: skip
            (config_dir / file_name).write_text("\n".join(lines) + "\n")

    def on_this_machine(arg: str) -> str:
        if arg.startswith("--host="):
            return "--host=127.0.0.1"
        if arg.startswith("--port="):
            return f"--port={port}"
        return local(arg)

    args = [on_this_machine(arg) for arg in container["args"]]
    env = {e["name"]: local(e["value"]) for e in container.get("env", []) if "value" in e}
    secret_env = [e["name"] for e in container.get("env", []) if "valueFrom" in e]
    return ServerCommand(args=[*container["command"], *args], env=env, secret_env=secret_env)
