"""Choosing the candidate: by a ranking metric, or by the deployment objective's cost at the deployed alert rate."""

from __future__ import annotations

import numpy as np
import pytest

from kingmaker.objective import Objective
from training import candidates as cand
from training import data, operating
from training.candidates import CandidateResult
from training.pipeline import TrainConfig, cross_validate, merit


def _result(name: str, pr_auc: float, cost: float) -> CandidateResult:
    return CandidateResult(name, {}, {"cv_pr_auc_mean": pr_auc, "cv_cost_mean": cost}, 0.5, np.zeros(1), 0.0)


def test_cost_chooses_the_cheapest_where_pr_auc_chooses_the_best_ranker() -> None:
    ranker, cheap = _result("xgboost", pr_auc=0.80, cost=40.0), _result("logreg", pr_auc=0.70, cost=35.0)
    assert max((ranker, cheap), key=lambda r: merit(r, "pr_auc")) is ranker
    assert max((ranker, cheap), key=lambda r: merit(r, "cost")) is cheap
    assert merit(cheap, "cost") == -35.0


class _Bar:
    def update(self, _: int) -> None:
        pass


def test_cv_cost_is_each_folds_cost_at_the_deployed_alert_rate() -> None:
    ds = data.synthetic(rows=3000, seed=3)
    cfg = TrainConfig(folds=3, objective=Objective(alert_rate=0.02), choose_rate=False, n_jobs=1)
    res = cross_validate(cand.CANDIDATES["logreg"], {}, ds.x, ds.y, None, cfg, _Bar())  # type: ignore[arg-type]
    assert res.alert_rate == 0.02
    # the folds again (the same StratifiedKFold), each fold's top 2 % of its out-of-fold scores flagged
    from sklearn.model_selection import StratifiedKFold

    costs = []
    for _, val in StratifiedKFold(3, shuffle=True, random_state=cfg.seed).split(ds.x, ds.y):
        y, s = ds.y[val], res.oof[val]
        flagged = np.zeros(len(val), dtype=bool)
        flagged[np.argsort(-s, kind="stable")[:round(0.02 * len(val))]] = True
        costs.append(1000 * np.mean(np.where(flagged, 5.0, np.where(y == 1, 100.0, 0.0))))
        assert costs[-1] == pytest.approx(operating.cost_at_rate(y, s, 0.02, cfg.objective))
    assert res.cv["cv_cost_mean"] == pytest.approx(np.mean(costs))
    assert res.cv["cv_cost_sd"] == pytest.approx(np.std(costs, ddof=1))
