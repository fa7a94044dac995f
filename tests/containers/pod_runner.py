"""Start a pod of the rendered chart with podman, as its pod spec says.

Everything a kubelet would take from the spec is taken from it: each container's image,
command, args, environment, ports, probes' endpoints, its security context (user and
group, read-only root file system, dropped capabilities, no privilege escalation, seccomp)
and its volumes. A pod becomes a podman pod: its containers share one network namespace,
as in Kubernetes. What has no podman counterpart is mapped, and only this:

- `emptyDir` → a tmpfs of the volume's `sizeLimit` (mode 0777, like an emptyDir) when one
  container mounts it; a tmpfs-backed podman volume, shared, when several do (podman
  cannot size those);
- `persistentVolumeClaim` → a podman volume chowned to the pod's user (`:U`, what
  `fsGroup` does to a claim's files);
- a Service → a network alias of the pod on a podman network, so other pods reach it by
  the name the chart renders (the Service's port must be the container's port);
- `containerPort` and probe ports → published on 127.0.0.1 at free ports, where the test
  polls the probe paths as a kubelet would.

podman reads `containers.conf` beside this file (runc, cgroupfs, rlimits within the hard
limit: docs/kubernetes.md, "The container tier"). Anything else in a spec (another volume
type, added capabilities, privileged) is refused with the field named, so a chart change
that this mapping does not cover fails loudly.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


class UnsupportedSpec(ValueError):
    """A field of the pod spec this mapping cannot run as the spec says."""


def byte_quantity(quantity: str | int) -> int:
    match = re.fullmatch(r"(\d+)([kMG]i?|)", str(quantity))
    if not match:
        raise UnsupportedSpec(f"size {quantity!r} is not a quantity like 1Gi or 512Mi")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Podman:
    binary: str

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done


@dataclass(frozen=True)
class HttpProbe:
    path: str
    port: int


@dataclass
class PodRun:
    """How to create one pod with podman, and where its ports and probes are."""

    name: str
    create_args: list[str]
    volumes: list[list[str]]
    containers: dict[str, list[str]]
    """`podman run` arguments of each container, by its name in the spec."""
    published: dict[int, int] = field(default_factory=dict)
    probes: dict[tuple[str, str], HttpProbe] = field(default_factory=dict)
    """(container, probe kind) → its HTTP endpoint."""

    def container_name(self, container: str) -> str:
        return f"{self.name}-{container}"

    def url(self, container_port: int) -> str:
        return f"http://127.0.0.1:{self.published[container_port]}"

    def probe_url(self, container: str, kind: str) -> str:
        probe = self.probes[(container, kind)]
        return f"{self.url(probe.port)}{probe.path}"


def _security_args(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    pod = pod_spec.get("securityContext") or {}
    ctx = container.get("securityContext") or {}

    def setting(name: str) -> Any:
        return ctx.get(name, pod.get(name))

    user, group = setting("runAsUser"), setting("runAsGroup")
    if user is None:
        raise UnsupportedSpec("no runAsUser: the image's user would decide who runs")
    if setting("runAsNonRoot") and (user == 0 or group == 0):
        raise UnsupportedSpec("runAsNonRoot with uid or gid 0: a kubelet refuses to start it")
    args = ["--user", f"{user}:{group if group is not None else user}"]
    if pod.get("fsGroup") is not None:
        args += ["--group-add", str(pod["fsGroup"])]
    if ctx.get("privileged"):
        raise UnsupportedSpec("privileged containers are not run here")
    if ctx.get("readOnlyRootFilesystem"):
        # Without --read-only-tmpfs=false podman adds writable tmpfs at /tmp, /var/tmp and
        # /run that the pod does not have.
        args += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = ctx.get("capabilities") or {}
    if capabilities.get("add"):
        raise UnsupportedSpec(f"capabilities.add {capabilities['add']} is not mapped")
    args += [f"--cap-drop={cap}" for cap in capabilities.get("drop") or []]
    if ctx.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt=no-new-privileges"]
    seccomp = (setting("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt=seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":  # podman's default profile is the runtime default
        raise UnsupportedSpec(f"seccompProfile {seccomp} is not mapped")
    return args


def _port_number(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise UnsupportedSpec(f"probe port {port!r} names no port of the container")


def _pod_volumes(
    pod_spec: Mapping[str, Any], name: str, claims: Mapping[str, str]
) -> tuple[dict[str, str], list[list[str]]]:
    """Podman volumes of the pod: by volume name, and the `volume create` arguments of
    those the pod owns (shared emptyDirs; claims are the caller's)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts = [m for c in pod_spec["containers"] for m in c.get("volumeMounts") or []]
    podman_volumes: dict[str, str] = {}
    to_create: list[list[str]] = []
    for volume_name, count in Counter(m["name"] for m in mounts).items():
        volume = volumes.get(volume_name)
        if volume is None:
            raise UnsupportedSpec(f"volumeMount {volume_name} names no volume of the pod")
        if "emptyDir" in volume and count > 1:
            podman_volumes[volume_name] = f"{name}-{volume_name}"
            to_create.append(["--opt", "type=tmpfs", "--opt", "device=tmpfs",
                              "--opt", "o=mode=0777", podman_volumes[volume_name]])  # fmt: skip
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in claims:
                raise UnsupportedSpec(f"claim {claim} has no podman volume (pass claims=)")
            podman_volumes[volume_name] = claims[claim]
        elif "emptyDir" not in volume:
            raise UnsupportedSpec(f"volume {volume_name} ({sorted(volume)}) is not mapped")
    return podman_volumes, to_create


def _mount_args(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], podman_volumes: Mapping[str, str]
) -> list[str]:
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    args: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        path, read_only = mount["mountPath"], bool(mount.get("readOnly"))
        if mount["name"] in podman_volumes:
            flags = ["ro"] if read_only else []
            if "persistentVolumeClaim" in volume:
                flags.append("U")
            suffix = f":{','.join(flags)}" if flags else ""
            args += ["-v", f"{podman_volumes[mount['name']]}:{path}{suffix}"]
        else:
            tmpfs = ["ro" if read_only else "rw", "mode=0777"]
            if (volume["emptyDir"] or {}).get("sizeLimit"):
                tmpfs.append(f"size={byte_quantity(volume['emptyDir']['sizeLimit'])}")
            args += ["--tmpfs", f"{path}:{','.join(tmpfs)}"]
    return args


def _environment(container: Mapping[str, Any], supplied: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        key = variable["name"]
        if key in supplied:
            continue
        if "value" not in variable:
            raise UnsupportedSpec(f"env {key} comes from {sorted(variable)}: pass it in env=")
        env[key] = str(variable["value"])
    return {**env, **supplied}


def expand(text: str, env: Mapping[str, str]) -> str:
    """A kubelet's `$(VAR)` references in command and args: replaced when VAR is defined,
    kept as written otherwise; `$$` is a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)


def pod_run(
    pod_spec: Mapping[str, Any],
    *,
    name: str,
    network: str,
    aliases: Sequence[str] = (),
    env: Mapping[str, Mapping[str, str]] | None = None,
    claims: Mapping[str, str] | None = None,
) -> PodRun:
    """The podman pod of `pod_spec`. `env` supplies, per container, what the spec reads
    from Secrets (or overrides a value, which the caller then documents)."""
    if pod_spec.get("initContainers"):
        raise UnsupportedSpec("initContainers are not mapped")
    podman_volumes, to_create = _pod_volumes(pod_spec, name, claims or {})
    run = PodRun(name=name, create_args=[], volumes=to_create, containers={})
    for container in pod_spec["containers"]:
        args = ["--name", run.container_name(container["name"]), "--pod", name]
        args += _security_args(pod_spec, container)
        args += _mount_args(pod_spec, container, podman_volumes)
        environment = _environment(container, (env or {}).get(container["name"], {}))
        args += [item for key, value in environment.items() for item in ("-e", f"{key}={value}")]
        if container.get("workingDir"):
            args += ["-w", container["workingDir"]]
        ports = [int(p["containerPort"]) for p in container.get("ports") or []]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = (container.get(kind) or {}).get("httpGet")
            if http:
                port = _port_number(container, http["port"])
                ports.append(port)
                run.probes[(container["name"], kind)] = HttpProbe(http.get("path", "/"), port)
        for port in ports:
            run.published.setdefault(port, free_port())
        if container.get("command"):
            command = [expand(part, environment) for part in container["command"]]
            args += ["--entrypoint", json.dumps(command)]
        arguments = [expand(part, environment) for part in container.get("args") or []]
        run.containers[container["name"]] = [*args, container["image"], *arguments]
    run.create_args = ["--name", name, "--network", network]
    for alias in aliases:
        run.create_args += ["--network-alias", alias]
    for port, host_port in run.published.items():
        run.create_args += ["-p", f"127.0.0.1:{host_port}:{port}"]
    return run
