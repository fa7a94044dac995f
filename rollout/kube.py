"""The Kubernetes side: read and merge-patch one InferenceService through the `kubernetes` client.

The client is imported when an `InferenceServices` is made (it costs a second or
two), so `import rollout` and `analyze` with explicit versions stay light.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rollout import isvc
from rollout.errors import ConfigError, ConflictError, UnreachableError

if TYPE_CHECKING:
    from rollout.lock import LeaseStore

logger = logging.getLogger(__name__)

FIELD_MANAGER = "mlops-rollout"
REQUEST_TIMEOUT_SECONDS = 30
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class KubeSettings:
    name: str
    """The InferenceService's name (`--isvc`)."""
    namespace: str | None = None
    """`--namespace`; None takes the kubeconfig context's namespace (or the pod's)."""
    kubeconfig: str | None = None
    """`--kubeconfig` / `KUBECONFIG`; None reads ~/.kube/config, then in-cluster."""
    context: str | None = None
    """`--context`: a kubeconfig context other than the current one."""


def _first_kubeconfig(kubeconfig: str | None) -> Path | None:
    """The kubeconfig to read, None for in-cluster configuration.

    `KUBECONFIG` / `--kubeconfig` may list several files (like kubectl, the ones that
    exist are merged); when it is set and none exists, that is a mistake to report with
    the path, never a silent fall-through to the pod's service account (which would
    act on whatever cluster this runs in). Unset, ~/.kube/config is read if it exists,
    else the in-cluster configuration."""
    if kubeconfig is None or not kubeconfig.strip(":"):
        default = Path(DEFAULT_KUBECONFIG).expanduser()
        return default if default.is_file() else None
    candidates = [c for c in kubeconfig.split(":") if c]
    found = [Path(c).expanduser() for c in candidates if Path(c).expanduser().is_file()]
    missing = [c for c in candidates if not Path(c).expanduser().is_file()]
    if not found:
        raise ConfigError(
            f"the kubeconfig {', '.join(missing)} does not exist (from --kubeconfig or "
            "KUBECONFIG); point it at your cluster's kubeconfig, or unset it to use "
            "~/.kube/config or, inside a pod, the service account"
        )
    if missing:
        logger.warning("kubeconfig files that do not exist are skipped: %s", ", ".join(missing))
    return found[0]


class InferenceServiceApi(Protocol):
    """What the rollout uses of one InferenceService's API: the Kubernetes API server
    (`InferenceServices`) or the local cluster (rollout/local.py)."""

    namespace: str
    name: str

    @property
    def path(self) -> str: ...

    def describe(self) -> str: ...

    def get(self) -> isvc.Json: ...

    def patch(self, body: isvc.Json, *, dry_run: bool = False) -> isvc.Json: ...

    def post_event(self, obj: isvc.Json, kind: str, reason: str, message: str) -> None: ...

    def leases(self) -> LeaseStore:
        """Where the rollout lock (lock.py) is kept, beside the InferenceService."""
        ...


def connect(settings: KubeSettings) -> InferenceServices:
    """An API client from kubeconfig (or the pod's service account), and the namespace."""
    from kubernetes import client
    from kubernetes import config as untyped_config
    from kubernetes.config.config_exception import ConfigException

    config: Any = untyped_config  # its loaders carry no type hints

    configuration = client.Configuration()
    namespace = settings.namespace
    first = _first_kubeconfig(settings.kubeconfig)
    try:
        if first is not None:
            config_file = settings.kubeconfig or str(first)
            config.load_kube_config(
                config_file=config_file,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
            if namespace is None:
                contexts, current = config.list_kube_config_contexts(config_file)
                chosen = (
                    next((c for c in contexts if c.get("name") == settings.context), current)
                    if settings.context
                    else current
                )
                namespace = ((chosen or {}).get("context") or {}).get("namespace")
        else:
            config.load_incluster_config(client_configuration=configuration)
            if namespace is None and IN_CLUSTER_NAMESPACE_FILE.is_file():
                namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    except ConfigException as e:
        raise ConfigError(
            f"no usable Kubernetes configuration ({e}); set --kubeconfig or KUBECONFIG, "
            "or run inside a pod with a service account"
        ) from e
    api_client = client.ApiClient(configuration=configuration)
    return InferenceServices(api_client, namespace or "default", settings.name)


class InferenceServices:
    """GET and JSON-merge-PATCH of one InferenceService."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.name = name
        self.host = str(api_client.configuration.host)
        self.api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @property
    def path(self) -> str:
        return isvc.api_path(self.namespace, self.name)

    def describe(self) -> str:
        return f"InferenceService {self.namespace}/{self.name}"

    def get(self) -> isvc.Json:
        obj = self._call(
            "read",
            self._api.get_namespaced_custom_object,
            isvc.GROUP,
            isvc.VERSION,
            self.namespace,
            isvc.PLURAL,
            self.name,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        if not isinstance(obj, dict):
            raise UnreachableError(f"{self.describe()}: the API server answered {obj!r}")
        return obj

    def patch(self, body: isvc.Json, *, dry_run: bool = False) -> isvc.Json:
        """Merge-patch; with `dry_run` the server runs authorization, admission and
        validation (`dryRun=All`) and answers the would-be object, storing nothing."""
        logger.info(
            "PATCH%s %s %s",
            " (dry run)" if dry_run else "",
            self.path,
            json.dumps(body, sort_keys=True),
        )
        obj = self._call(
            "patch",
            self._api.patch_namespaced_custom_object,
            isvc.GROUP,
            isvc.VERSION,
            self.namespace,
            isvc.PLURAL,
            self.name,
            body,
            field_manager=FIELD_MANAGER,
            dry_run="All" if dry_run else None,
            _content_type=isvc.MERGE_PATCH,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        return obj if isinstance(obj, dict) else {}

    def post_event(self, obj: isvc.Json, kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on the InferenceService (what `kubectl describe` lists)."""
        self._call(
            "create an Event on",
            self._core.create_namespaced_event,
            self.namespace,
            event_body(obj, kind, reason, message),
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def leases(self) -> LeaseStore:
        from rollout.lock import KubeLeases

        return KubeLeases(self.api_client, self.namespace)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            message = _status_message(e)
            if e.status == 404:
                raise ConfigError(
                    f"{self.describe()} not found on {self.host} ({message}); "
                    "check --namespace and --isvc (deploy it first: make deploy)"
                ) from e
            if e.status == 409:
                raise ConflictError(f"{self.describe()} changed while we patched it") from e
            if e.status in (401, 403):
                raise UnreachableError(
                    f"not allowed to {what} {self.describe()} on {self.host}: HTTP {e.status} "
                    f"{message}; the tool needs get and patch on inferenceservices "
                    "(docs/rollouts.md, 'Permissions')"
                ) from e
            raise UnreachableError(
                f"could not {what} {self.describe()}: HTTP {e.status} {message}"
            ) from e
        except HTTPError as e:
            raise UnreachableError(
                f"the Kubernetes API server at {self.host} is unreachable: {e}"
            ) from e


EVENT_SOURCE = "mlops-rollout-controller"


def event_body(obj: isvc.Json, kind: str, reason: str, message: str) -> isvc.Json:
    """An Event about `obj`; `kind` is Normal or Warning, `reason` one CamelCase word."""
    from datetime import UTC, datetime

    metadata = obj.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{metadata.get('name', 'isvc')}.",
            "namespace": metadata.get("namespace"),
        },
        "involvedObject": {
            "apiVersion": f"{isvc.GROUP}/{isvc.VERSION}",
            "kind": "InferenceService",
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        # The API server refuses messages over 1 KiB for core Events.
        "message": message[:1024],
        "source": {"component": EVENT_SOURCE},
        "reportingComponent": EVENT_SOURCE,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _status_message(error: Any) -> str:
    """The `message` of the API server's Status object, or the raw reason."""
    try:
        status = json.loads(error.body or "")
    except (TypeError, ValueError):
        return str(error.reason or "")
    return str(status.get("message") or error.reason or "") if isinstance(status, dict) else ""
