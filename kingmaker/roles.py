"""The two roles a model version plays and the two ways traffic reaches them: closed sets every part
shares (routing, logs, drift, the controller). Pure: importing it pulls in nothing."""

from __future__ import annotations

from enum import StrEnum


class Arm(StrEnum):
    """Which side of the comparison a model version serves."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"


class Mode(StrEnum):
    """``split``: the challenger answers its share of routing keys. ``shadow``: the champion answers every
    request and the challenger scores the same requests off the response path."""

    SPLIT = "split"
    SHADOW = "shadow"
