"""MLflow 3 webhooks as a faster trigger of the controller than its poll.

MLflow signs each delivery (mlflow/webhooks/delivery.py): the header
`X-MLflow-Signature: v1,<base64 HMAC-SHA256>` over `<delivery id>.<timestamp>.<body>`
with the webhook's secret, beside `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp`.
A delivery is accepted only with a valid signature and a timestamp within
`MAX_AGE_SECONDS` of ours (a recorded delivery cannot be replayed later). An accepted
`model_version_alias.created` event only wakes the model's worker: the worker reads the
registry itself, so a forged or stale event could at most cause an early poll.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
MAX_AGE_SECONDS = 300
SECRET_ENV = "ROLLOUT_WEBHOOK_SECRET"
"""Where the controller reads the webhook's secret (a Secret's key in the chart)."""
URL_ENV = "ROLLOUT_WEBHOOK_URL"
"""The controller's own `/webhook` URL as MLflow must call it; set, the controller
registers its webhook in MLflow itself (`register`), as the chart does."""
NAME_ENV = "ROLLOUT_WEBHOOK_NAME"
DEFAULT_NAME = "mlops-rollout-controller"
EVENTS = ("model_version_alias.created",)
REGISTER_RETRY_SECONDS = 30.0


class WebhookRefused(ValueError):
    """A delivery that is not signed by the webhook's secret, or not recent."""


@dataclass(frozen=True)
class AliasEvent:
    model_name: str
    alias: str
    version: str


def signature(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    digest = hmac.new(
        secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> dict[str, Any]:
    """The delivery's JSON payload, once its signature and age are checked."""
    delivery_id = headers.get(DELIVERY_HEADER) or ""
    timestamp = headers.get(TIMESTAMP_HEADER) or ""
    sent = headers.get(SIGNATURE_HEADER) or ""
    if not (delivery_id and timestamp and sent):
        raise WebhookRefused(
            f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_HEADER}: "
            "create the MLflow webhook with the controller's secret"
        )
    try:
        text = body.decode()
        age = abs((time.time() if now is None else now) - int(timestamp))
    except (UnicodeDecodeError, ValueError) as e:
        raise WebhookRefused(f"unreadable delivery ({e})") from e
    if not hmac.compare_digest(signature(secret, delivery_id, timestamp, text), sent):
        raise WebhookRefused("the signature does not match the controller's webhook secret")
    if age > MAX_AGE_SECONDS:
        raise WebhookRefused(f"the delivery is {age:.0f}s old (at most {MAX_AGE_SECONDS}s)")
    try:
        payload = json.loads(text)
    except ValueError as e:
        raise WebhookRefused(f"the body is not JSON ({e})") from e
    if not isinstance(payload, dict):
        raise WebhookRefused("the body is not a JSON object")
    return payload


def alias_event(payload: Mapping[str, Any]) -> AliasEvent | None:
    """The alias set by a `model_version_alias.created` event; None for any other event."""
    if (payload.get("entity"), payload.get("action")) != ("model_version_alias", "created"):
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        return None
    name, alias, version = data.get("name"), data.get("alias"), data.get("version")
    if not all(isinstance(v, str) and v for v in (name, alias, version)):
        return None
    return AliasEvent(str(name), str(alias), str(version))


def register(client: Any, name: str, url: str, secret: str) -> str:
    """Create the webhook `name` in MLflow, or bring the one of that name up to date (URL,
    events, secret, ACTIVE): a restarted controller or a rotated secret leaves exactly one.
    `client` is an `MlflowClient`; MLflow lets only an admin manage webhooks when its
    basic-auth app runs. Returns "created" or "updated"."""
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        found = next((hook for hook in page if hook.name == name), None)
        token = page.token
        if found is not None or not token:
            break
    if found is None:
        client.create_webhook(name=name, url=url, events=list(EVENTS), secret=secret)
        return "created"
    client.update_webhook(
        found.webhook_id, url=url, events=list(EVENTS), secret=secret, status="ACTIVE"
    )
    return "updated"


def keep_registering(
    tracking_uri: str, name: str, url: str, secret: str, stopping: threading.Event
) -> threading.Thread:
    """`register` in a thread, again every REGISTER_RETRY_SECONDS until it succeeds or
    `stopping` is set: MLflow may start after the controller. The poll works meanwhile."""
    from mlflow import MlflowClient

    def attempt() -> None:
        client = MlflowClient(tracking_uri=tracking_uri)
        while not stopping.is_set():
            try:
                done = register(client, name, url, secret)
            except Exception as e:  # any failure of MLflow or its client: try again later
                logger.warning(
                    "webhook %s not registered in MLflow at %s (%s); retrying in %.0fs; "
                    "the poll still runs",
                    name, tracking_uri, e, REGISTER_RETRY_SECONDS,
                )  # fmt: skip
                stopping.wait(REGISTER_RETRY_SECONDS)
                continue
            logger.info("webhook %s %s in MLflow: %s for %s", name, done, url, ", ".join(EVENTS))
            return

    thread = threading.Thread(target=attempt, name="webhook-registration", daemon=True)
    thread.start()
    return thread
