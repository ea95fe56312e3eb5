"""`kingmaker bench promotion`: does the promotion decision keep its promises under repeated looks?

Synthetic traffic at a 2 % fraud rate (`k8s.simulate`), the controller deciding every ``--look-every``
labelled transactions up to ``--transactions``, ``--runs`` seeded experiments per cell:

* **A/A** (two models of equal quality): how often it wrongly promotes (target <= 6 % at alpha 0.05),
  against a peers-style fixed-threshold rule (promote when the challenger's cost estimate is 5 % below the
  champion's at any look) on the same data;
* **power**: a challenger whose exact expected cost is 10 % lower is promoted within the horizon
  (target >= 80 % in shadow mode); split mode at the default 10 % weight and at 50 %;
* median labelled transactions to a decision, power curves (PNG), and a sensitivity of shadow-mode
  power to the correlation between the two models' scores and to amount-based costs; A/A for the
  recall-at-FPR criterion.

Writes ``bench-results/promotion.json`` and ``bench-results/promotion-power.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=500, help="experiments per cell")
    p.add_argument("--transactions", type=int, default=50_000, help="labelled transactions per experiment")
    p.add_argument("--look-every", type=int, default=500, help="labelled transactions between two looks")
    p.add_argument("--correlation", type=float, default=0.85,
                   help="within-class correlation of the two models' scores (shadow mode)")
    p.add_argument("--fixed-margin", type=float, default=0.05,
                   help="the fixed-threshold rule promotes when the challenger's cost is this much lower")
    p.add_argument("--seed", type=int, default=20261126, help="base seed")
    p.add_argument("--out", default="bench-results", help="folder for promotion.json and the PNG")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from tqdm.auto import tqdm

    from k8s.policy import CostMatrix, Criterion, Policy
    from k8s.simulate import Experiments, Scenario, Setup, Verdict, expected_cost, separation_for_cost, simulate

    policy = Policy()
    amount_policy = dataclasses.replace(policy, cost=CostMatrix(amount_feature="Amount", amount_cap=500.0))
    recall_policy = dataclasses.replace(policy, criterion=Criterion.RECALL_AT_FPR)
    base = Scenario(correlation=args.correlation)
    better = dataclasses.replace(base, challenger_separation=separation_for_cost(0.9, policy, base))

    def cell(name: str, scenario: Scenario, *, paired: bool, weight: float = 0.1,
             pol: Policy = policy) -> tuple[str, Setup, Policy]:
        return name, Setup(scenario, args.transactions, args.look_every, paired, weight), pol

    def better_at(scenario: Scenario, pol: Policy) -> Scenario:
        return dataclasses.replace(scenario, challenger_separation=separation_for_cost(0.9, pol, scenario))

    cells = [
        cell("aa_shadow", base, paired=True),
        cell("aa_split", base, paired=False),
        cell("power_shadow", better, paired=True),
        cell("power_split", better, paired=False),
        cell("power_split_w50", better, paired=False, weight=0.5),
        cell("aa_split_w50", base, paired=False, weight=0.5),
        cell("aa_shadow_amounts", base, paired=True, pol=amount_policy),
        cell("power_shadow_amounts", better_at(base, amount_policy), paired=True, pol=amount_policy),
    ]
    cells += [cell("aa_shadow_recall", base, paired=True, pol=recall_policy),
              cell("aa_split_recall", base, paired=False, pol=recall_policy)]
    for rho in (0.75, 0.95):
        scenario = dataclasses.replace(base, correlation=rho)
        cells.append(cell(f"power_shadow_rho{int(rho * 100)}", better_at(scenario, policy), paired=True))

    print(f"{len(cells)} cells x {args.runs} runs, looks every {args.look_every} up to {args.transactions} "
          f"labelled transactions; {os.cpu_count()} CPU(s)")
    results: dict[str, Experiments] = {}
    seconds: dict[str, float] = {}
    chunk = 50
    with tqdm(total=len(cells) * args.runs, desc="promotion experiments", unit="run") as bar:
        for i, (name, setup, pol) in enumerate(cells):
            started = time.perf_counter()
            results[name] = simulate(setup, pol, args.runs, args.seed + i, chunk=chunk,
                                     fixed_rule_margin=args.fixed_margin, progress=bar.update)
            seconds[name] = time.perf_counter() - started

    looks = np.arange(args.look_every, args.transactions + 1, args.look_every)

    def summary(name: str) -> dict[str, Any]:
        e = results[name]
        setup, pol = next((s, p) for n, s, p in cells if n == name)
        promoted = e.verdict == Verdict.PROMOTE.value
        champion_cost = expected_cost(setup.scenario.champion_separation, pol, setup.scenario)
        challenger_cost = expected_cost(setup.scenario.challenger_separation, pol, setup.scenario)
        return {
            "mode": "shadow" if setup.paired else "split", "challenger_weight": setup.challenger_weight,
            "correlation": setup.scenario.correlation, "criterion": pol.criterion.value,
            "amount_based_cost": pol.cost.amount_feature is not None,
            "champion_cost_per_1k": 1000 * champion_cost, "challenger_cost_per_1k": 1000 * challenger_cost,
            "runs": len(e.verdict), "promoted": e.rate(Verdict.PROMOTE), "rolled_back": e.rate(Verdict.ROLLBACK),
            "held_to_the_end": e.rate(Verdict.NONE),
            "median_transactions_to_promotion": float(np.median(e.at[promoted])) if promoted.any() else None,
            "fixed_rule_promoted": float(e.fixed_rule_promoted.mean()) if pol.criterion is Criterion.EXPECTED_COST
            else None,
            "fixed_rule_median_transactions": float(np.median(e.fixed_rule_at[e.fixed_rule_promoted]))
            if e.fixed_rule_promoted.any() else None,
            "promoted_by": {int(m): e.promoted_by(int(m)) for m in looks[9::10]},
            "seconds": seconds[name],
        }

    numbers = {name: summary(name) for name, _, _ in cells}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fig, (ax_power, ax_aa) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, label in (("power_shadow", "shadow (paired)"), ("power_shadow_rho95", "shadow, correlation 0.95"),
                        ("power_shadow_rho75", "shadow, correlation 0.75"),
                        ("power_shadow_amounts", "shadow, amount-based cost (cap 500)"),
                        ("power_split_w50", "split 50/50"), ("power_split", "split 90/10")):
        e = results[name]
        ax_power.plot(looks, [e.promoted_by(int(m)) for m in looks], label=label)
    ax_power.axhline(0.8, color="grey", ls=":", lw=1)
    ax_power.set(title="Power: challenger with 10% lower expected cost", xlabel="labelled transactions",
                 ylabel="share of runs promoted", ylim=(0, 1))
    ax_power.legend(fontsize=8)
    for name, label in (("aa_shadow", "shadow"), ("aa_split", "split 90/10")):
        e = results[name]
        ax_aa.plot(looks, [e.promoted_by(int(m)) for m in looks], label=f"always-valid test, {label}")
        ax_aa.plot(looks, [float(np.mean(e.fixed_rule_promoted & (e.fixed_rule_at <= m))) for m in looks],
                   ls="--", label=f"fixed {args.fixed_margin:.0%} rule, {label}")
    ax_aa.axhline(policy.alpha, color="grey", ls=":", lw=1)
    ax_aa.set(title="A/A: false promotions (alpha = 0.05)", xlabel="labelled transactions",
              ylabel="share of runs promoted", ylim=(0, 1))
    ax_aa.legend(fontsize=8)
    fig.suptitle(f"{args.runs} runs per curve, 2% fraud, alert rate {policy.alert_rate:g}, "
                 f"a look every {args.look_every} labelled transactions")
    fig.tight_layout()
    png = out / "promotion-power.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    report = {
        "runs": args.runs, "transactions": args.transactions, "look_every": args.look_every,
        "alpha": policy.alpha, "alert_rate": policy.alert_rate, "fraud_rate": base.fraud_rate,
        "review_cost": policy.cost.review_cost, "missed_fraud_cost": policy.cost.missed_fraud_cost,
        "amount_cap": amount_policy.cost.amount_cap, "correlation": args.correlation,
        "fixed_rule_margin": args.fixed_margin, "seed": args.seed, "cpus": os.cpu_count(),
        "machine": platform.platform(), "cells": numbers, "plot": str(png),
    }
    (out / "promotion.json").write_text(json.dumps(report, indent=1))

    print(f"\n{'cell':<24} {'promoted':>9} {'rolled back':>12} {'median n':>9} {'fixed rule':>11} {'cost/1k ch vs cl':>18}")
    for name, row in numbers.items():
        median = row["median_transactions_to_promotion"]
        fixed = row["fixed_rule_promoted"]
        print(f"{name:<24} {row['promoted']:>9.1%} {row['rolled_back']:>12.1%} "
              f"{'-' if median is None else f'{median:.0f}':>9} {'-' if fixed is None else f'{fixed:.1%}':>11} "
              f"{row['champion_cost_per_1k']:>8.1f} vs {row['challenger_cost_per_1k']:.1f}")
    print(f"wrote {out / 'promotion.json'} and {png}")
    return 0
