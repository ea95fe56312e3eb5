"""Names of the ``ChampionChallenger`` resource and its closed sets, shared by the CRD and the controller.

The CRD itself is ``k8s/crd/championchallenger.yaml``; unit tests check that the enums here and in
`k8s.decide` are the ones its schema allows. Pure: no Kubernetes client import.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from k8s.decide import Decision, Outcome

GROUP = "kingmaker.io"
VERSION = "v1alpha1"
KIND = "ChampionChallenger"
PLURAL = "championchallengers"
CRD_PATH = Path(__file__).parent / "crd" / "championchallenger.yaml"


class Phase(StrEnum):
    """``status.phase``: where the resource is in its life."""

    PENDING = "Pending"  # not evaluated yet
    EVALUATING = "Evaluating"  # collecting evidence (the last decision was HOLD)
    AWAITING_APPROVAL = "AwaitingApproval"  # the challenger won; a human must approve (approval: manual)
    PROMOTING = "Promoting"  # swap in progress: the next reconcile finishes it
    PROMOTED = "Promoted"  # the challenger is the champion now
    ROLLING_BACK = "RollingBack"  # taking the challenger out of traffic
    ROLLED_BACK = "RolledBack"  # the challenger gets no traffic
    ERROR = "Error"  # bad spec or contradictory observations: a human must look


def phase_for(decision: Decision) -> Phase:
    """The phase a decision moves the resource to before the act step runs."""
    if decision.outcome is Outcome.PROMOTE:
        return Phase.AWAITING_APPROVAL if decision.awaiting_approval else Phase.PROMOTING
    if decision.outcome is Outcome.ROLLBACK:
        return Phase.ROLLING_BACK
    if decision.outcome is Outcome.ERROR:
        return Phase.ERROR
    return Phase.EVALUATING
