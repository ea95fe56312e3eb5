"""A recording fake of the Kubernetes API server, plugged in under the official client at its REST layer.

The real ``kubernetes`` client builds every request (paths, query, headers, JSON bodies); this fake records
them and answers like the API server would for the handful of objects the controller touches: optimistic
concurrency on ``metadata.resourceVersion`` (409 on a stale one), JSON merge patch for custom resources,
strategic merge (lists of named items merged by ``name``) for Deployments and ConfigMaps, lists with equality
label selectors, watch streams played from a script (`FakeApiServer.watches`), and injectable failures. No
cluster, but what is sent is exactly what a cluster would receive.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client
from kubernetes.client import rest

NS = "fraud"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class _HTTP:
    def __init__(self, status: int, doc: Any, lines: list[Any] | None = None):
        self.status = status
        self.reason = {200: "OK", 201: "Created", 404: "Not Found", 409: "Conflict"}.get(status, "Error")
        self.data = json.dumps(doc).encode()
        self.headers = {"content-type": "application/json"}
        self.lines = lines or []

    # what a watch reads of urllib3's response (``_preload_content=False``)
    def stream(self, amt: Any = None, decode_content: Any = None) -> Any:
        for line in self.lines:
            yield (json.dumps(line) + "\n").encode()

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any) -> Any:
    """Merge patch, except lists of objects with a ``name`` are merged item by item (containers, env)."""
    if isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in patch) and isinstance(target, list):
        out = [copy.deepcopy(x) for x in target]
        for item in patch:
            match = next((i for i, x in enumerate(out) if x.get("name") == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = strategic_merge(out[match], item)
        return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic_merge(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}


@dataclass
class FakeApiServer:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, name) -> object
    requests: list[Request] = field(default_factory=list)
    failures: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path regex, status), once each
    events: list[dict[str, Any]] = field(default_factory=list)
    #: One entry per watch request, in order: the events the stream delivers before the server ends it
    #: ({"type": ..., "object": ...}), or an HTTP status the request fails with. None: no more watches expected.
    watches: list[list[dict[str, Any]] | int] = field(default_factory=list)
    _rv: int = 100

    def api_client(self) -> client.ApiClient:
        api = client.ApiClient(client.Configuration(host="https://kube.test"))
        api.rest_client = self  # type: ignore[assignment]
        return api

    def close(self) -> None:
        pass

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def put(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {}).update(resourceVersion=self.next_rv(), namespace=NS)
        obj["metadata"].setdefault("generation", 1)
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        self.objects[(kind, obj["metadata"]["name"])] = obj
        return obj

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.objects[(kind, name)]

    # -- the REST layer the client calls --------------------------------------------------------------

    def request(self, method: str, url: str, headers: dict[str, str] | None = None, body: Any = None,
                post_params: Any = None, _request_timeout: Any = None) -> rest.RESTResponse:
        parsed = urlparse(url)
        req = Request(method, parsed.path, parse_qs(parsed.query), dict(headers or {}), copy.deepcopy(body))
        self.requests.append(req)
        for i, (m, pattern, code) in enumerate(self.failures):
            if m == method and re.search(pattern, parsed.path):
                del self.failures[i]
                return rest.RESTResponse(_HTTP(code, _status(code, "Injected", f"injected {code}")))
        if req.query.get("watch") == ["true"]:
            script = self.watches.pop(0)
            if isinstance(script, int):
                return rest.RESTResponse(_HTTP(script, _status(script, "Injected", f"injected {script}")))
            return rest.RESTResponse(_HTTP(200, {}, script))
        status, doc = self._route(req)
        return rest.RESTResponse(_HTTP(status, doc))

    def _route(self, req: Request) -> tuple[int, Any]:
        p = req.path
        routes = [
            (r"^/apis/kingmaker\.io/v1alpha1/namespaces/[^/]+/championchallengers$", "cc", None),
            (r"^/apis/kingmaker\.io/v1alpha1/namespaces/[^/]+/championchallengers/([^/]+)(/status)?$", "cc", 1),
            (r"^/apis/apps/v1/namespaces/[^/]+/deployments$", "deployment", None),
            (r"^/apis/apps/v1/namespaces/[^/]+/deployments/([^/]+)$", "deployment", 1),
            (r"^/api/v1/namespaces/[^/]+/configmaps/([^/]+)$", "configmap", 1),
            (r"^/apis/coordination\.k8s\.io/v1/namespaces/[^/]+/leases$", "lease", None),
            (r"^/apis/coordination\.k8s\.io/v1/namespaces/[^/]+/leases/([^/]+)$", "lease", 1),
            (r"^/apis/events\.k8s\.io/v1/namespaces/[^/]+/events$", "event", None),
        ]
        for pattern, kind, group in routes:
            m = re.match(pattern, p)
            if m:
                name = m.group(group) if group else None
                subresource = m.group(2) if kind == "cc" and group else None
                return self._handle(req, kind, name, subresource)
        return 404, _status(404, "NotFound", f"no route {p}")

    def _handle(self, req: Request, kind: str, name: str | None, sub: str | None) -> tuple[int, Any]:
        if kind == "event":
            event = {**req.body, "metadata": {**req.body.get("metadata", {}), "name": f"ev{len(self.events)}"}}
            self.events.append(event)
            return 201, event
        if name is None and req.method == "GET":
            wanted = dict(pair.split("=", 1) for pair in req.query.get("labelSelector", [""])[0].split(",") if pair)
            items = [o for (k, _), o in self.objects.items() if k == kind
                     and all((o["metadata"].get("labels") or {}).get(key) == v for key, v in wanted.items())]
            return 200, {"items": items, "metadata": {"resourceVersion": str(self._rv)}}
        if name is None and req.method == "POST":
            name = req.body["metadata"]["name"]
            if (kind, name) in self.objects:
                return 409, _status(409, "AlreadyExists", f"{kind} {name} exists")
            return 201, self.put(kind, req.body)
        current = self.objects.get((kind, name))  # type: ignore[arg-type]
        if current is None:
            return 404, _status(404, "NotFound", f"{kind} {name} not found")
        if req.method == "GET":
            return 200, current
        wanted_rv = (req.body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
            return 409, _status(409, "Conflict", "the object has been modified; please apply your changes to the "
                                                 "latest version and try again")
        if req.method == "PUT":
            updated = copy.deepcopy(req.body)
        elif req.method == "PATCH":
            ctype = req.headers.get("Content-Type", "")
            patch = {k: v for k, v in req.body.items() if k != "metadata"}
            if kind == "cc" and sub == "/status":
                patch = {"status": patch.get("status")}  # the status subresource ignores everything else
            elif kind == "cc":
                patch.pop("status", None)
            if ctype == "application/merge-patch+json":
                updated = merge_patch(current, patch)
            elif ctype == "application/strategic-merge-patch+json":
                updated = strategic_merge(current, patch)
            else:
                return 415, _status(415, "UnsupportedMediaType", ctype)
            if kind == "cc" and sub is None and updated.get("spec") != current.get("spec"):
                updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        else:
            return 405, _status(405, "MethodNotAllowed", req.method)
        updated["metadata"] = {**current["metadata"], "resourceVersion": self.next_rv(),
                               "generation": updated.get("metadata", {}).get("generation",
                                                                            current["metadata"].get("generation"))}
        self.objects[(kind, name)] = updated  # type: ignore[index]
        return 200, updated

    def sent(self, method: str | None = None, pattern: str = "") -> list[Request]:
        return [r for r in self.requests if (method is None or r.method == method) and re.search(pattern, r.path)]


def deployment(arm: str, version: str, *, colour: str = "blue", cc: str = "fraud-detector",
               container: str = "scorer") -> dict[str, Any]:
    """An arm Deployment as the chart makes it: ``<cc>-<arm>-<colour>``, labelled for the controller."""
    name = f"{cc}-{arm}-{colour}"
    labels = {"kingmaker.io/championchallenger": cc, "kingmaker.io/arm": arm, "kingmaker.io/color": colour}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": {"kingmaker.io/model-version": version}},
                                  "spec": {"containers": [{"name": container, "image": "kingmaker:1", "env": [
                                      {"name": "KINGMAKER_ARM", "value": "x"},
                                      {"name": "KINGMAKER_MODEL_URI", "value": f"models:/fraud-detector/{version}"},
                                  ]}, {"name": "sidecar", "image": "proxy:1"}]}}}}


def router_configmap(name: str, text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"router.yaml": text}}
