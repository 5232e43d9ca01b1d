"""A minimal client for the admin REST API (Apache Pulsar's `/admin/v2/...` paths and JSON bodies),
plus a bounded-polling helper for the policy tests (the broker applies namespace policies about
once a second, so their effect is waited for, never slept for).

Plain functions over `urllib.request`; no new dependency. Every call goes to `broker.http_url`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

# Loopback HTTP must not go through an http_proxy from the environment (same as conftest).
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# How long a namespace policy may take to reach the topics (applied once a second, cached 1 s).
POLICY_WAIT_S = 15.0


class AdminError(RuntimeError):
    """An admin call answered with an HTTP error (deliberately not an AssertionError, so `eventually`
    does not retry it)."""

    def __init__(self, method: str, path: str, status: int, body: str):
        self.method, self.path, self.status, self.body = method, path, status, body
        hint = " (is the admin REST API there?)" if status == 404 else ""
        super().__init__(f"admin {method} {path} -> HTTP {status}{hint}: {body[:300]}")


def admin(broker, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """One admin request. `body` is sent as JSON (an int, a bool or a dict, as Pulsar expects).

    Returns the parsed JSON answer, the text if it is not JSON, or None for an empty answer.
    Raises AdminError for a 4xx/5xx answer.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(broker.http_url + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _NO_PROXY.open(request, timeout=timeout) as resp:
            raw = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        raise AdminError(method, path, e.code, e.read().decode(errors="replace")) from None
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def call(broker, method: str, path: str, body: Any = None, token: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    """One admin request that may fail: (HTTP status, parsed JSON answer, its text if not JSON, or
    None if empty). `token`: sent as `Authorization: Bearer`."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(broker.http_url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read().decode(errors="replace")
    if not raw.strip():
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def topic_path(topic: str) -> str:
    """`persistent://t/ns/x` -> `persistent/t/ns/x` (the REST form of a topic name)."""
    domain, rest = topic.split("://", 1)
    return f"{domain}/{rest}"


def create_tenant(broker, tenant: str) -> None:
    """PUT /admin/v2/tenants/{tenant}; an existing tenant (409) is fine."""
    try:
        admin(broker, "PUT", f"/admin/v2/tenants/{tenant}", {"adminRoles": [], "allowedClusters": ["standalone"]})
    except AdminError as e:
        if e.status != 409:
            raise


def create_namespace(broker, tenant: str = "public", prefix: str = "ns") -> str:
    """A new namespace `tenant/<prefix>-<unique>` (PUT /admin/v2/namespaces/{tenant}/{ns})."""
    namespace = f"{tenant}/{prefix}-{uuid.uuid4().hex[:10]}"
    admin(broker, "PUT", f"/admin/v2/namespaces/{namespace}")
    return namespace


def set_namespace_policy(broker, namespace: str, policy: str, body: Any, query: str = "") -> None:
    """POST /admin/v2/namespaces/{tenant}/{ns}/{policy} with a JSON body."""
    admin(broker, "POST", f"/admin/v2/namespaces/{namespace}/{policy}{query}", body)


def create_partitioned_topic(broker, topic: str, partitions: int) -> None:
    admin(broker, "PUT", f"/admin/v2/{topic_path(topic)}/partitions", partitions)


def update_partitioned_topic(broker, topic: str, partitions: int) -> None:
    admin(broker, "POST", f"/admin/v2/{topic_path(topic)}/partitions", partitions)


def get_partitioned_metadata(broker, topic: str) -> Any:
    return admin(broker, "GET", f"/admin/v2/{topic_path(topic)}/partitions")


def unique_topic_in(namespace: str, prefix: str = "t", domain: str = "persistent") -> str:
    return f"{domain}://{namespace}/{prefix}-{uuid.uuid4().hex[:12]}"


def eventually(check: Callable[[], Any], timeout_s: float = POLICY_WAIT_S, interval_s: float = 0.25,
               what: str = "condition") -> Any:
    """Call check() until it returns a truthy value (returned) or the time is up.

    check() may raise AssertionError to mean "not yet"; the last such error is reported.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = None
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            detail = f": {last}" if last is not None else ""
            raise AssertionError(f"{what} not reached within {timeout_s:.0f}s{detail}")
        time.sleep(interval_s)


def is_duplicate_receipt(message_id) -> bool:
    """A send receipt for a message deduplication dropped: Pulsar answers with ledger/entry -1."""
    return message_id.ledger_id() in (-1, 2**64 - 1) and message_id.entry_id() in (-1, 2**64 - 1)
