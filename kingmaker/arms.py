"""The arms file: which model version each local arm must serve — the contract between the
promotion controller (which writes it) and ``kingmaker serve`` (which watches it).

``$KINGMAKER_HOME/serving/arms.yaml``, written atomically with ``generation`` +1 on every change::

    model_name: fraud-detector
    generation: 3
    updated: "2026-11-26T14:00:00.000000Z"
    arms:
      champion: {version: "2", model_uri: "models:/fraud-detector/2"}
      challenger: {version: "3", model_uri: "models:/fraud-detector/3"}   # null: no challenger arm

Arms are pinned to a version, never an alias, so a restart for any reason serves the same model.
In Kubernetes the same information lives in the arm Deployments' ``KINGMAKER_MODEL_URI``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from kingmaker.errors import PermanentError

FILE_NAME = "arms.yaml"
HEADER = "# Written by the promotion controller (kingmaker promote): the version each arm must serve.\n"


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


@dataclass(frozen=True)
class ArmsFile:
    champion: str | None  # None: the file does not exist yet
    challenger: str | None
    generation: int = 0


def read(path: Path) -> ArmsFile:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return ArmsFile(None, None, 0)
    except (OSError, yaml.YAMLError) as exc:
        raise PermanentError(f"cannot read {path}: {exc}") from exc
    arms = doc.get("arms") or {}

    def version(arm: str) -> str | None:
        entry = arms.get(arm)
        return None if not entry else str(entry.get("version"))

    return ArmsFile(version("champion"), version("challenger"), int(doc.get("generation", 0)))


def write(path: Path, model_name: str, champion: str, challenger: str | None, *, generation: int,
          now: datetime | None = None) -> None:
    def entry(version: str | None) -> dict[str, str] | None:
        return None if version is None else {"version": version, "model_uri": model_uri(model_name, version)}

    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc = {"model_name": model_name, "generation": generation, "updated": stamp,
           "arms": {"champion": entry(champion), "challenger": entry(challenger)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
