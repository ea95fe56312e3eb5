"""The Helm chart, rendered by the real `helm` binary (v4, installed by .ci/tools), and the schemas the
rendered objects are checked against: the Kubernetes 1.37 OpenAPI schemas (kubernetes-validate, offline)
and, for custom resources, their CRDs' OpenAPI v3 schemas (ours, and the Prometheus Operator's)."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "kingmaker"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "kingmaker"
NAMESPACE = "fraud"
CRDS = [ROOT / "k8s" / "crd" / "championchallenger.yaml",
        *sorted((Path(__file__).parent / "prometheus-operator-crds").glob("*.yaml"))]


def helm_binary() -> str:
    path = shutil.which("helm")
    if path is None:  # not a skip: CI installs it (.ci/test sources .ci/tools)
        pytest.fail("helm is not on PATH: run `source .ci/tools` (bash .ci/tools helm) before pytest")
    return path


def helm(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Doc:
    template: str  # path under templates/, e.g. scorer-deployment.yaml
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


def parse(text: str) -> list[Doc]:
    docs = []
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        source = re.search(r"^# Source: [^/]+/templates/(.+)$", chunk, re.MULTILINE)
        obj = yaml.safe_load(chunk)
        if obj:
            docs.append(Doc(source.group(1) if source else "", obj))
    return docs


@functools.lru_cache(maxsize=64)
def _render(chart: Path, values: tuple[Path, ...], sets: tuple[str, ...]) -> tuple[Doc, ...]:
    args: list[str | Path] = ["template", RELEASE, chart, "--namespace", NAMESPACE]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    return tuple(parse(helm(*args).stdout))


def render(*values: Path, sets: Iterable[str] = (), chart: Path = CHART) -> list[Doc]:
    return list(_render(chart, tuple(values), tuple(sets)))


def one(docs: list[Doc], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d.obj for d in docs if d.kind == kind and d.name == name]
    return found


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec of a workload (Deployment, Job, CronJob), else none."""
    spec = doc.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", {}).get("template") or spec.get("template")
    return [template["spec"]] if doc["kind"] in ("Deployment", "Job", "CronJob") and template else []


# --- CRD schemas ---------------------------------------------------------------------------------------

def _strict(schema: Any) -> Any:
    """The API server rejects unknown fields (strict field validation); JSON Schema needs saying so."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=1)
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft4Validator]:
    """(apiVersion, kind) -> a validator of the CRD's OpenAPI v3 schema (draft 4: boolean exclusiveMinimum)."""
    out = {}
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            out[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = \
                jsonschema.Draft4Validator(_strict(schema))
    return out


@pytest.fixture(params=SCENARIOS, ids=lambda p: p.name.removesuffix("-values.yaml"))
def scenario(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)
