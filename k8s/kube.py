"""The thin Kubernetes adapter: the official ``kubernetes`` client, and nothing clever.

- `Kube` — the calls the controller makes, each with a timeout, every `ApiException` translated:
  409 -> `Conflict` (re-read and retry), 404 -> `NotFound`, 410 -> `Gone` (a watch's resourceVersion is too
  old: list again), 429/5xx/transport -> `TemporaryError`, other 4xx -> `PermanentError`. `Kube.watch` streams
  the resources' changes (`k8s.watch.ResourceWatch` keeps a cache with it).
- `KubeResource` — `ResourceSource` + `StatusStore` for one ``ChampionChallenger``: status through the
  status subresource (JSON merge patch carrying ``metadata.resourceVersion``: a concurrent write gives 409,
  we re-read and retry), Events through ``events.k8s.io/v1``.
- `KubeServing` — `ServingTarget`: the arm Deployments are found by label (``kingmaker.io/championchallenger``
  + ``kingmaker.io/arm``, the chart's contract), every colour's, and each gets the model URI env var and a
  pod-template annotation with the version (a strategic merge patch, so the Deployment rolls its pods); the
  router ConfigMap's ``router.yaml``, shared by the colours, gets ``mode`` and ``challenger_weight`` (other
  keys kept; 409 -> re-read).

Leader election on a Lease, which uses `Kube`'s Lease calls, is `k8s.lease`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import yaml

from k8s.resource import GROUP, KIND, PLURAL, VERSION
from k8s.state import Arms, Spec, Status, parse_spec
from kingmaker.errors import PermanentError, TemporaryError
from kingmaker.roles import Arm, Mode

log = logging.getLogger(__name__)

FIELD_MANAGER = "kingmaker-controller"
REPORTING_CONTROLLER = f"{GROUP}/promotion-controller"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
VERSION_ANNOTATION = f"{GROUP}/model-version"
MODEL_URI_ENV = "KINGMAKER_MODEL_URI"
CONFLICT_RETRIES = 5


class Conflict(TemporaryError):
    """409: the object changed since it was read."""


class NotFound(PermanentError):
    """404: the object does not exist."""


class Gone(TemporaryError):
    """410: a watch's resourceVersion is older than the server keeps; list again."""


def _message(exc: Any) -> str:
    import json

    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


class Kube:
    """The API calls, namespaced, with timeouts and translated errors. Build with `connect` or an `ApiClient`."""

    def __init__(self, api_client: Any, namespace: str, *, timeout: float = 10.0,
                 field_manager: str = FIELD_MANAGER):
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout
        self.field_manager = field_manager
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.events = client.EventsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    @classmethod
    def connect(cls, namespace: str | None = None, *, timeout: float = 10.0) -> Kube:
        """In-cluster configuration when running in a pod, else the kubeconfig (its current namespace)."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
            ns = namespace or _incluster_namespace()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, OSError) as exc:
                raise PermanentError(f"no Kubernetes configuration (in-cluster or kubeconfig): {exc}") from exc
            _, active = config.list_kube_config_contexts()
            ns = namespace or active.get("context", {}).get("namespace") or "default"
        return cls(client.ApiClient(), ns, timeout=timeout)

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate the client's exceptions raised inside (see the module's doc); ``what`` names the call."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as exc:
            status = exc.status or 0
            text = f"Kubernetes: {what}: {status} {_message(exc)}"
            if status == 409:
                raise Conflict(text) from exc
            if status == 404:
                raise NotFound(text) from exc
            if status == 410:
                raise Gone(text) from exc
            if status == 429 or status >= 500 or status == 0:
                raise TemporaryError(text) from exc
            raise PermanentError(text) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryError(f"Kubernetes: {what}: API server unreachable: {exc}") from exc

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.errors(what):
            return fn(*args, _request_timeout=self.timeout, **kwargs)

    # --- the ChampionChallenger ----------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.call(f"reading {KIND} {name}", self.custom.get_namespaced_custom_object,
                              GROUP, VERSION, self.namespace, PLURAL, name))

    def list_resources(self) -> tuple[list[dict[str, Any]], str]:
        """The namespace's resources and the list's resourceVersion (where a watch of changes starts)."""
        out = self.call(f"listing {PLURAL}", self.custom.list_namespaced_custom_object,
                        GROUP, VERSION, self.namespace, PLURAL)
        return list(out.get("items") or []), str((out.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """The resources' changes after ``resource_version``, as (event type, object), until the server ends
        the watch after ``timeout_seconds``. BOOKMARK events (asked for) carry only a newer resourceVersion."""
        from kubernetes import watch

        stream = watch.Watch()
        with self.errors(f"watching {PLURAL} from resourceVersion {resource_version}"):
            for event in stream.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                       PLURAL, resource_version=resource_version, timeout_seconds=timeout_seconds,
                                       allow_watch_bookmarks=True,
                                       _request_timeout=(self.timeout, timeout_seconds + self.timeout)):
                yield str(event["type"]), dict(event["raw_object"])

    def patch_status(self, name: str, status: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return dict(self.call(f"patching {KIND} {name} status", self.custom.patch_namespaced_custom_object_status,
                              GROUP, VERSION, self.namespace, PLURAL, name, body,
                              field_manager=self.field_manager, _content_type=MERGE_PATCH))

    def approve(self, name: str, version: str, resource_version: str | None) -> dict[str, Any]:
        """``spec.approvedChallengerVersion`` (what ``kingmaker promote --approve --kubernetes`` writes)."""
        body: dict[str, Any] = {"spec": {"approvedChallengerVersion": version}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return dict(self.call(f"approving {version} on {KIND} {name}", self.custom.patch_namespaced_custom_object,
                              GROUP, VERSION, self.namespace, PLURAL, name, body,
                              field_manager=self.field_manager, _content_type=MERGE_PATCH))

    def event(self, regarding: Mapping[str, Any], type_: str, reason: str, action: str, note: str,
              instance: str) -> None:
        from kubernetes import client

        meta = regarding.get("metadata") or {}
        now = datetime.now(UTC)
        # Named as client-go's recorder names Events: <object>.<nanoseconds, hex> (a generateName ending in "."
        # is refused by the API server)
        name = f"{meta.get('name', 'kingmaker')}.{int(now.timestamp() * 1e9):x}"
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(name=name, namespace=self.namespace),
            event_time=now, type=type_, reason=reason[:128], action=action[:128],
            note=note.encode()[:1000].decode(errors="ignore"),
            reporting_controller=REPORTING_CONTROLLER, reporting_instance=instance[:128],
            regarding=client.V1ObjectReference(api_version=f"{GROUP}/{VERSION}", kind=KIND, name=meta.get("name"),
                                               namespace=self.namespace, uid=meta.get("uid"),
                                               resource_version=meta.get("resourceVersion")))
        self.call(f"creating event {reason}", self.events.create_namespaced_event, self.namespace, body,
                  field_manager=self.field_manager)

    # --- arms and router --------------------------------------------------------------------------

    def deployments(self, label_selector: str) -> list[Any]:
        out = self.call(f"listing Deployments {label_selector}", self.apps.list_namespaced_deployment,
                        self.namespace, label_selector=label_selector)
        return list(out.items or [])

    def patch_deployment(self, name: str, body: Mapping[str, Any]) -> None:
        self.call(f"patching Deployment {name}", self.apps.patch_namespaced_deployment, name, self.namespace,
                  dict(body), field_manager=self.field_manager, _content_type=STRATEGIC_MERGE_PATCH)

    def config_map(self, name: str) -> Any:
        return self.call(f"reading ConfigMap {name}", self.core.read_namespaced_config_map, name, self.namespace)

    def patch_config_map(self, name: str, data: Mapping[str, str], resource_version: str | None) -> None:
        body: dict[str, Any] = {"data": dict(data)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self.call(f"patching ConfigMap {name}", self.core.patch_namespaced_config_map, name, self.namespace, body,
                  field_manager=self.field_manager, _content_type=STRATEGIC_MERGE_PATCH)

    # --- leases -----------------------------------------------------------------------------------

    def read_lease(self, name: str) -> Any:
        return self.call(f"reading Lease {name}", self.coordination.read_namespaced_lease, name, self.namespace)

    def create_lease(self, lease: Any) -> Any:
        return self.call("creating Lease", self.coordination.create_namespaced_lease, self.namespace, lease,
                         field_manager=self.field_manager)

    def replace_lease(self, name: str, lease: Any) -> Any:
        return self.call(f"updating Lease {name}", self.coordination.replace_namespaced_lease, name, self.namespace,
                         lease, field_manager=self.field_manager)


def _incluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return os.environ.get("POD_NAMESPACE", "default")


# --- the resource -------------------------------------------------------------------------------

class KubeResource:
    """One ``ChampionChallenger``: `ResourceSource` and `StatusStore`."""

    def __init__(self, kube: Kube, name: str, *, identity: str, guard: Callable[[], None] = lambda: None):
        self.kube = kube
        self.name = name
        self.identity = identity
        self.guard = guard
        self._doc: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        self._doc = self.kube.get(self.name)
        return self._doc

    def load(self) -> tuple[Spec, Status]:
        doc = self._read()
        return parse_spec(doc), Status.from_dict(doc.get("status"))

    def status(self) -> Status:
        return Status.from_dict((self._doc or self._read()).get("status"))

    def save(self, status: Status) -> None:
        """Merge-patch the status; fields the new status lacks are removed (null), 409 -> re-read, retry."""
        body: dict[str, Any] = {"championVersion": None, "challengerVersion": None, "lastEvaluation": None,
                                **status.to_dict()}
        doc = self._doc or self._read()
        for attempt in range(CONFLICT_RETRIES):
            self.guard()
            try:
                self._doc = self.kube.patch_status(self.name, body, (doc.get("metadata") or {}).get("resourceVersion"))
                return
            except Conflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("%s: status conflict, re-reading", self.name)
                doc = self._read()

    def event(self, type_: str, reason: str, message: str) -> None:
        try:
            action = {"Promoted": "Promote", "RolledBack": "Rollback"}.get(reason, "Evaluate")
            self.kube.event(self._doc or {"metadata": {"name": self.name}}, type_, reason, action, message,
                            self.identity)
        except (TemporaryError, PermanentError) as exc:
            log.warning("%s: event %s not recorded: %s", self.name, reason, exc)


# --- serving ------------------------------------------------------------------------------------

CC_LABEL = f"{GROUP}/championchallenger"
ARM_LABEL = f"{GROUP}/arm"


@dataclass(frozen=True)
class ServingNames:
    """Where the arms and the router of one resource live (``{name}`` is the resource's name).

    The arms are every Deployment labelled ``kingmaker.io/championchallenger=<name>`` and
    ``kingmaker.io/arm=<arm>`` — in the chart one per colour, ``<fullname>-<arm>-<blue|green>``, all patched
    alike so a colour switch or rollback serves the same versions. The router ConfigMap is one, by name.
    """

    resource: str = "{name}"
    container: str = "scorer"
    router_configmap: str = "{name}-router"
    router_key: str = "router.yaml"

    def resolve(self, name: str) -> ServingNames:
        return replace(self, resource=self.resource.format(name=name),
                       router_configmap=self.router_configmap.format(name=name))

    def selector(self, arm: Arm) -> str:
        return f"{CC_LABEL}={self.resource},{ARM_LABEL}={arm.value}"


def deployment_patch(container: str, model_uri: str, version: str) -> dict[str, Any]:
    """Strategic merge patch: containers and env merge by name, so only this variable changes."""
    return {"spec": {"template": {
        "metadata": {"annotations": {VERSION_ANNOTATION: version}},
        "spec": {"containers": [{"name": container, "env": [{"name": MODEL_URI_ENV, "value": model_uri}]}]},
    }}}


class KubeServing:
    """`ServingTarget` over the arm Deployments (found by label) and the router ConfigMap."""

    def __init__(self, kube: Kube, names: ServingNames, model_name: str):
        self.kube = kube
        self.names = names
        self.model_name = model_name

    def _serves(self, deployment: Any) -> tuple[str | None, str | None]:
        template = deployment.spec.template
        annotations = (template.metadata.annotations if template.metadata else None) or {}
        for c in template.spec.containers or []:
            if c.name == self.names.container:
                env = {e.name: e.value for e in c.env or []}
                return env.get(MODEL_URI_ENV), annotations.get(VERSION_ANNOTATION)
        raise PermanentError(f"Deployment {deployment.metadata.name} has no container {self.names.container!r}")

    def _point_arm(self, arm: Arm, version: str) -> bool:
        """Patch every Deployment of ``arm`` that does not serve ``version`` yet. True if any was patched."""
        from kingmaker.arms import model_uri

        selector = self.names.selector(arm)
        found = sorted(self.kube.deployments(selector), key=lambda d: str(d.metadata.name))
        if not found:
            if arm is Arm.CHAMPION:
                raise PermanentError(f"no Deployment labelled {selector} in namespace {self.kube.namespace}: "
                                     f"the champion arm is not installed (helm install the chart)")
            log.debug("no Deployment labelled %s: the challenger arm is not installed", selector)
            return False
        uri = model_uri(self.model_name, version)
        changed = False
        for deployment in found:
            if self._serves(deployment) == (uri, version):
                continue
            name = str(deployment.metadata.name)
            self.kube.patch_deployment(name, deployment_patch(self.names.container, uri, version))
            log.info("Deployment %s -> %s (rolling update)", name, uri)
            changed = True
        return changed

    def point(self, arms: Arms) -> bool:
        changed = self._point_arm(Arm.CHAMPION, arms.champion)
        if arms.challenger is not None:  # no challenger: leave its Deployments alone, they get no traffic
            changed = self._point_arm(Arm.CHALLENGER, arms.challenger) or changed
        return changed

    def route(self, mode: Mode, challenger_weight: float) -> bool:
        from kingmaker import router_config

        name, key = self.names.router_configmap, self.names.router_key
        for attempt in range(CONFLICT_RETRIES):
            cm = self.kube.config_map(name)
            text = (cm.data or {}).get(key, "")
            try:
                doc = yaml.safe_load(text) if text else None
            except yaml.YAMLError as exc:
                raise PermanentError(f"ConfigMap {name} key {key} is not valid YAML: {exc}") from exc
            # no file yet: start from the defaults; an existing one must be valid (an empty one is not)
            current = (router_config.parse(doc, source=f"ConfigMap {name} {key}") if text
                       else router_config.RouterConfig())
            wanted = replace(current, mode=mode, challenger_weight=challenger_weight)
            if wanted == current and text:
                return False
            try:
                self.kube.patch_config_map(name, {key: yaml.safe_dump(wanted.as_dict(), sort_keys=False)},
                                           cm.metadata.resource_version)
                log.info("ConfigMap %s: mode %s, challenger weight %g", name, mode.value, challenger_weight)
                return True
            except Conflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("ConfigMap %s changed under us, re-reading", name)
        return False  # pragma: no cover
