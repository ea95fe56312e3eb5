"""The MLflow model registry: the `k8s.act.Registry` port.

Reads which versions the aliases point at (`k8s.act.current_pair`) and carries out a swap's alias moves
and version tags, through an explicit `MlflowClient` (from `kingmaker.settings.MlflowSettings.client`).
Failures are mapped by `kingmaker.mlflow_errors`: a missing model or version is permanent, the rest
temporary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kingmaker.mlflow_errors import translated

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class MlflowRegistry:
    """`Registry` over an explicit `MlflowClient` (from `kingmaker.settings.MlflowSettings.client`)."""

    def __init__(self, client: MlflowClient, model_name: str):
        self.client = client
        self.model_name = model_name

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        with translated(f"{what} of {self.model_name}"):
            return fn(*args)

    def aliases(self) -> dict[str, str]:
        model = self._call("reading the aliases", self.client.get_registered_model, self.model_name)
        return {str(k): str(v) for k, v in (model.aliases or {}).items()}

    def set_alias(self, alias: str, version: str) -> None:
        self._call(f"@{alias} -> {version}", self.client.set_registered_model_alias, self.model_name, alias, version)
        log.info("MLflow: %s@%s -> version %s", self.model_name, alias, version)

    def delete_alias(self, alias: str) -> None:
        self._call(f"removing @{alias}", self.client.delete_registered_model_alias, self.model_name, alias)
        log.info("MLflow: removed %s@%s", self.model_name, alias)

    def tag(self, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._call(f"tagging version {version}", self.client.set_model_version_tag, self.model_name, version,
                       key, value)

    def version_tags(self, version: str) -> dict[str, str]:
        mv = self._call(f"reading version {version}", self.client.get_model_version, self.model_name, version)
        return dict(mv.tags or {})
