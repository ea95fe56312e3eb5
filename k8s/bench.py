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
  recall-at-FPR criterion;
* every mode three ways: shadow, split 90/10 (unpaired: blocks of each arm's own requests) and split 90/10
  with pairing (the other arm also scores each request off the response path; compared as pairs);
* for each power cell, the labels the always-valid test needs for 80 % power and the same for a
  fixed-horizon one-sided z-test of the same gains (planned for one look, not allowed to peek), and
  their ratio with a bootstrap 95 % interval over the cell's runs (`ratio_interval`): at a few hundred
  runs the 80 % point of sparse gains moves by several percent from one seed to the next;
* each expected-cost power cell again with a **planned horizon** (``plannedLabels`` = the labels its z-test
  needs for 80 % power, as a power calculation would give; same seeds, so the same gains), the A/A cells
  of the same data and mode with that plan, and the synthetic shadow cell with wrong plans (1/4 and 4x);
* **real data** (`k8s.replay`): bootstrap replays of the latest 40 % of the credit-card set, scored by
  XGBoost models trained on the earliest 60 %, at the preregistered operating point (alert rate 0.3 %,
  twice the fraud rate rounded; review cost 5, missed fraud 100): A/A per mode, and champions made worse
  by measured steps of logit noise; ``--real-transactions`` per replay (150,000 by default, so the 80 %
  power point is reached), power also read at 50,000;
* for each power cell, the best constant bet in hindsight (`k8s.simulate.CONSTANT_BETS`): how close any single
  bettor could come to the z-test on that cell's gains; for each paired real-data power cell, its discordant
  frauds and the sign model's frontier (`k8s.frontier`): how close *any* valid test could come.

``--quick`` shrinks everything for a smoke test. Writes ``bench-results/promotion.json`` and
``bench-results/promotion-power.png``, and prints Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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
    p.add_argument("--real-runs", type=int, default=300,
                   help="real-data replays per cell (0: skip real data; fewer move the 80%% power point by ~10%%)")
    p.add_argument("--real-transactions", type=int, default=150_000, help="labelled transactions per replay")
    p.add_argument("--real-scores", type=Path, default=None,
                   help="cached real-data scores (.npz, see k8s.replay); default: train once into $KINGMAKER_CACHE")
    p.add_argument("--core", action="store_true",
                   help="only the per-mode cells (shadow, split, paired split x A/A, power), no sensitivity cells")
    p.add_argument("--quick", action="store_true",
                   help="smoke-test size: 6 runs of 4,000 transactions, 4 replays of 6,000")


#: labelled transactions at which power is read for the README (the issue's horizon)
POWER_AT = 50_000
#: real-data operating point, fixed before measuring (expected cost, 2 x the 0.17 % fraud rate, rounded)
REAL_ALERT_RATE = 0.003
#: wrong plans measured: plannedLabels at these multiples of the labels the z-test needs
MISPLANNED = (0.25, 4.0)
#: logit noise added to the champion in the real-data power cells (measured cost steps)
REAL_STEPS = (3.0, 3.5)


def labels_for_power(curve: Any, looks: Any, level: float = 0.8) -> float | None:
    """Smallest look where ``curve`` (share of runs decided by then) reaches ``level``, linearly
    interpolated between looks; None if it never does within the horizon."""
    import numpy as np

    above = np.flatnonzero(np.asarray(curve) >= level)
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(looks[0])
    x0, x1, y0, y1 = float(looks[i - 1]), float(looks[i]), float(curve[i - 1]), float(curve[i])
    return x0 + (level - y0) * (x1 - x0) / (y1 - y0)


def power_points(promoted_at: Any, z_significant: Any, looks: Any) -> tuple[float | None, float | None]:
    """Labels for 80 % power of the test and of the z-test. ``promoted_at``: per run, the labels at which the test
    promoted (``inf`` if it did not); ``z_significant``: per run and look, whether the z-test planned for that look
    rejects."""
    import numpy as np

    at, looks = np.asarray(promoted_at, dtype=np.float64), np.asarray(looks)
    return (labels_for_power((at[:, None] <= looks[None, :]).mean(axis=0), looks),
            labels_for_power(np.asarray(z_significant).mean(axis=0), looks))


def ratio_interval(promoted_at: Any, z_significant: Any, looks: Any, *, resamples: int = 400,
                   level: float = 0.95) -> tuple[float | None, float | None]:
    """Bootstrap percentile interval (runs resampled) of the ratio of `power_points`, test / z-test.

    Both curves come from the same resampled runs, as the point estimate's do. An end is None where more than its
    tail of the resamples never reach 80 % power within the horizon. Seeded: the same runs give the same interval.
    """
    import numpy as np

    at, z = np.asarray(promoted_at, dtype=np.float64), np.asarray(z_significant)
    rng = np.random.default_rng(len(at))
    ratios = np.full(resamples, np.nan)
    for b in range(resamples):
        i = rng.integers(0, len(at), len(at))
        n80, z80 = power_points(at[i], z[i], looks)
        if z80 is not None:
            ratios[b] = np.inf if n80 is None else n80 / z80
    if np.isnan(ratios).all():
        return None, None
    lo, hi = np.nanquantile(ratios, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")  # no inf arithmetic
    return (float(lo) if np.isfinite(lo) else None), (float(hi) if np.isfinite(hi) else None)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.runs, args.transactions, args.real_runs, args.real_transactions = 6, 4000, 4, 6000
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from tqdm.auto import tqdm

    from k8s.policy import CostMatrix, Criterion, Policy
    from k8s.simulate import (
        CONSTANT_BETS,
        Experiments,
        Scenario,
        Setup,
        Verdict,
        expected_cost,
        separation_for_cost,
        simulate,
    )

    policy = Policy(alert_rate=0.02, fpr=0.01)  # the synthetic world's 2% fraud: its own operating point
    amount_policy = dataclasses.replace(policy, cost=CostMatrix(amount_feature="Amount", amount_cap=500.0))
    recall_policy = dataclasses.replace(policy, criterion=Criterion.RECALL_AT_FPR)
    base = Scenario(correlation=args.correlation)
    better = dataclasses.replace(base, challenger_separation=separation_for_cost(0.9, policy, base))

    @dataclasses.dataclass(frozen=True)
    class Cell:
        name: str
        data: str  # "synthetic" or "real"
        setup: Setup
        policy: Policy
        champion_cost: float  # exact (synthetic) or measured on the whole latest part (real), per 1k
        challenger_cost: float
        traffic: Any = None  # real data: (runs, rng) -> Traffic

    def cell(name: str, scenario: Scenario, *, paired: bool, weight: float = 0.1, pairing: float = 0.0,
             pol: Policy = policy) -> Cell:
        return Cell(name, "synthetic", Setup(scenario, args.transactions, args.look_every, paired, weight, pairing),
                    pol, 1000 * expected_cost(scenario.champion_separation, pol, scenario),
                    1000 * expected_cost(scenario.challenger_separation, pol, scenario))

    def better_at(scenario: Scenario, pol: Policy) -> Scenario:
        return dataclasses.replace(scenario, challenger_separation=separation_for_cost(0.9, pol, scenario))

    cells = [
        cell("aa_shadow", base, paired=True),
        cell("aa_split", base, paired=False),
        cell("aa_paired_split", base, paired=False, pairing=1.0),
        cell("power_shadow", better, paired=True),
        cell("power_split", better, paired=False),
        cell("power_paired_split", better, paired=False, pairing=1.0),
    ]
    sensitivity = [
        cell("power_split_w50", better, paired=False, weight=0.5),
        cell("aa_split_w50", base, paired=False, weight=0.5),
        cell("aa_shadow_amounts", base, paired=True, pol=amount_policy),
        cell("power_shadow_amounts", better_at(base, amount_policy), paired=True, pol=amount_policy),
    ]
    sensitivity += [cell("aa_shadow_recall", base, paired=True, pol=recall_policy),
                    cell("aa_split_recall", base, paired=False, pol=recall_policy)]
    for rho in (0.75, 0.95):
        scenario = dataclasses.replace(base, correlation=rho)
        sensitivity.append(cell(f"power_shadow_rho{int(rho * 100)}", better_at(scenario, policy), paired=True))
    if not args.core:
        cells += sensitivity

    if args.real_runs > 0:
        from k8s import replay

        real = replay.load(args.real_scores)
        real_policy = dataclasses.replace(policy, alert_rate=REAL_ALERT_RATE)

        def real_cell(name: str, a: replay.Arm, b: replay.Arm, *, paired: bool, pairing: float = 0.0) -> Cell:
            setup = Setup(base, args.real_transactions, args.look_every, paired, 0.1, pairing)
            n = args.real_transactions

            def traffic(runs: int, rng: np.random.Generator) -> Any:
                if paired:
                    return replay.shadow_replay(real, a, b, n, runs, rng)
                if pairing:
                    return replay.paired_split_replay(real, a, b, n, runs, pairing, rng)
                return replay.split_replay(real, a, b, n, runs, 0.1, rng)

            return Cell(f"real_{name}", "real", setup, real_policy, replay.population_cost(real, a, real_policy),
                        replay.population_cost(real, b, real_policy), traffic)

        swap, xgb = replay.Arm("swap"), replay.Arm("xgboost")
        cells += [real_cell("aa_shadow", swap, swap, paired=True),
                  real_cell("aa_split", xgb, xgb, paired=False),
                  real_cell("aa_paired_split", swap, swap, paired=False, pairing=1.0)]
        for step in REAL_STEPS:
            worse = replay.Arm("xgboost", step)
            cells.append(real_cell(f"power_shadow_noise{step:g}", worse, xgb, paired=True))
        worse = replay.Arm("xgboost", REAL_STEPS[-1])
        cells += [real_cell(f"power_split_noise{REAL_STEPS[-1]:g}", worse, xgb, paired=False),
                  real_cell(f"power_paired_split_noise{REAL_STEPS[-1]:g}", worse, xgb, paired=False, pairing=1.0)]

    results: dict[str, Experiments] = {}
    seconds: dict[str, float] = {}
    seeds = {c.name: args.seed + i for i, c in enumerate(cells)}

    def experiments(todo: list[Cell], what: str) -> None:
        total = sum(args.real_runs if c.data == "real" else args.runs for c in todo)
        print(f"{len(todo)} cells, {total} runs ({what}): looks every {args.look_every} up to {args.transactions} "
              f"(synthetic) / {args.real_transactions} (real) labelled transactions; {os.cpu_count()} CPU(s)")
        with tqdm(total=total, desc=f"promotion experiments, {what}", unit="run") as bar:
            for c in todo:
                started = time.perf_counter()
                results[c.name] = simulate(c.setup, c.policy, args.real_runs if c.data == "real" else args.runs,
                                           seeds[c.name], chunk=50 if c.data == "synthetic" else 20,
                                           fixed_rule_margin=args.fixed_margin, progress=bar.update, traffic=c.traffic)
                seconds[c.name] = time.perf_counter() - started

    experiments(cells, "unplanned")
    # The planned horizon (policy.plannedLabels), set as a power calculation would: each expected-cost power cell
    # again on its own seed (the same traffic, so the same gains), planned at the labels its fixed-horizon z-test
    # needs for 80 % power, rounded up to 100; each A/A cell of the same data and mode with the smallest such plan,
    # so the level is checked under the very bets that buy the power.
    def with_plan(c: Cell, labels: int, name: str = "") -> Cell:
        return dataclasses.replace(c, name=f"{name or c.name}_planned",
                                   policy=dataclasses.replace(c.policy, planned_labels=labels))

    plans: dict[str, int] = {}
    for c in cells:
        z80 = labels_for_power(results[c.name].z_power(), c.setup.looks)
        if c.name.startswith(("power_", "real_power_")) and c.policy.criterion is Criterion.EXPECTED_COST \
                and c.setup.challenger_weight == 0.1 and "rho" not in c.name and z80 is not None:
            plans[c.name] = 100 * math.ceil(z80 / 100)
    planned = [with_plan(c, plans[c.name]) for c in cells if c.name in plans]
    for c in cells:
        same = [plans[p.name] for p in cells if p.name in plans and p.data == c.data and p.setup.mode == c.setup.mode
                and p.policy.cost == c.policy.cost]
        if c.name.startswith(("aa_", "real_aa_")) and c.policy.criterion is Criterion.EXPECTED_COST and same \
                and c.setup.challenger_weight == 0.1:
            planned.append(with_plan(c, min(same)))
    # ... and what a wrong plan costs: the synthetic shadow power cell planned at a quarter and at 4x its z-test n
    if "power_shadow" in plans:
        c = next(c for c in cells if c.name == "power_shadow")
        planned += [with_plan(c, 100 * math.ceil(m * plans[c.name] / 100), f"power_shadow_misplanned_x{m:g}")
                    for m in MISPLANNED]
    seeds.update({c.name: seeds[c.name.removesuffix("_planned").split("_misplanned")[0]] for c in planned})
    experiments(planned, "planned horizon")
    cells += planned

    looks = np.arange(args.look_every, args.transactions + 1, args.look_every)

    def summary(c: Cell) -> dict[str, Any]:
        e = results[c.name]
        cell_looks = c.setup.looks
        promoted_at = e.promoted_at()
        promoted = np.isfinite(promoted_at)
        n80, z80 = power_points(promoted_at, e.z_significant, cell_looks)
        bet_power = dict(zip(CONSTANT_BETS, e.constant_bet_power(), strict=True))
        reached = {bet: n for bet, power in bet_power.items() if (n := labels_for_power(power, cell_looks)) is not None}
        floor_bet = min(reached, key=reached.__getitem__) if reached else None
        return {
            "data": c.data, "mode": c.setup.mode, "challenger_weight": c.setup.challenger_weight,
            "pairing": c.setup.pairing, "transactions": c.setup.transactions,
            "correlation": c.setup.scenario.correlation if c.data == "synthetic" else None,
            "criterion": c.policy.criterion.value, "alert_rate": c.policy.alert_rate,
            "planned_labels": c.policy.planned_labels,
            "amount_based_cost": c.policy.cost.amount_feature is not None,
            "champion_cost_per_1k": c.champion_cost, "challenger_cost_per_1k": c.challenger_cost,
            "effect": 1 - c.challenger_cost / c.champion_cost,
            "runs": len(e.verdict), "promoted": e.rate(Verdict.PROMOTE), "rolled_back": e.rate(Verdict.ROLLBACK),
            "held_to_the_end": e.rate(Verdict.NONE),
            f"promoted_by_{POWER_AT}": e.promoted_by(POWER_AT) if c.setup.transactions >= POWER_AT else None,
            "median_transactions_to_promotion": float(np.median(promoted_at[promoted])) if promoted.any() else None,
            "labels_for_80pct_power": n80, "z_test_labels_for_80pct_power": z80,
            "ratio_to_z_test": n80 / z80 if n80 is not None and z80 is not None else None,
            "ratio_to_z_test_95pct": ratio_interval(promoted_at, e.z_significant, cell_looks)
            if n80 is not None and z80 is not None else None,
            "constant_bets_promoted_at_horizon": {f"{bet:g}": float(power[-1]) for bet, power in bet_power.items()},
            "best_constant_bet": floor_bet,
            "best_constant_bet_labels_for_80pct_power": None if floor_bet is None else reached[floor_bet],
            "best_constant_bet_ratio_to_z_test": None if floor_bet is None or z80 is None else reached[floor_bet] / z80,
            "z_test_power_at_horizon": float(e.z_power()[-1]),
            # per traffic, so not again for the planned cells (same seeds, same gains)
            "sign_model": sign_model(e.discordant, c.setup.transactions)
            if c.data == "real" and c.setup.mode != "split" and c.name.startswith("real_power_")
            and c.policy.planned_labels is None else None,
            "fixed_rule_promoted": float(e.fixed_rule_promoted.mean()) if c.policy.criterion is Criterion.EXPECTED_COST
            else None,
            "fixed_rule_median_transactions": float(np.median(e.fixed_rule_at[e.fixed_rule_promoted]))
            if e.fixed_rule_promoted.any() else None,
            "promoted_by": {int(m): e.promoted_by(int(m)) for m in cell_looks[9::10]},
            "seconds": seconds[c.name],
        }

    numbers = {c.name: summary(c) for c in cells}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fig, (ax_power, ax_aa) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, label in (("power_shadow", "shadow (paired)"), ("power_shadow_rho95", "shadow, correlation 0.95"),
                        ("power_shadow_rho75", "shadow, correlation 0.75"),
                        ("power_shadow_amounts", "shadow, amount-based cost (cap 500)"),
                        ("power_split_w50", "split 50/50"), ("power_split", "split 90/10"),
                        ("power_paired_split", "split 90/10, paired")):
        if name not in results:
            continue
        e = results[name]
        ax_power.plot(looks, [e.promoted_by(int(m)) for m in looks], label=label)
    ax_power.axhline(0.8, color="grey", ls=":", lw=1)
    ax_power.set(title="Power: challenger with 10% lower expected cost", xlabel="labelled transactions",
                 ylabel="share of runs promoted", ylim=(0, 1))
    ax_power.legend(fontsize=8)
    for name, label in (("aa_shadow", "shadow"), ("aa_split", "split 90/10"), ("aa_paired_split", "split 90/10, paired")):
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
        "real_runs": args.real_runs, "real_transactions": args.real_transactions, "real_alert_rate": REAL_ALERT_RATE,
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
    print("\n" + readme_table(numbers))
    if any(row.get("sign_model") for row in numbers.values()):
        print("\n" + frontier_table(numbers))
    print(f"wrote {out / 'promotion.json'} and {png}")
    return 0


def sign_model(discordant: Any, transactions: int) -> dict[str, float | None]:
    """A cell's discordant frauds (`Experiments.discordant`) and what the sign model (`k8s.frontier`) makes of
    them: labels for 80 % power of the z-test, of the best constant bet for the true effect, and the bound below
    which no valid test of the signs gets."""
    from k8s.frontier import labels_for_power as sign_labels
    from k8s.simulate import CONSTANT_BETS

    wins, losses = (int(x) for x in discordant.sum(axis=0))
    rate = (wins + losses) / (len(discordant) * transactions)
    out: dict[str, float | None] = {"discordant_per_1k": 1000 * rate, "win_share": None, "z_test_labels": None,
                                    "constant_bet_labels": None, "constant_bet": None, "any_test_labels": None}
    if wins + losses:
        labels = sign_labels(rate, wins / (wins + losses), CONSTANT_BETS)
        out |= {"win_share": wins / (wins + losses), "z_test_labels": labels.z_test,
                "constant_bet_labels": labels.constant_bet, "constant_bet": labels.bet, "any_test_labels": labels.any_test}
    return out


def frontier_table(numbers: dict[str, dict[str, Any]]) -> str:
    """The README's second table: per paired real-data power cell, its discordant frauds and, in the sign model,
    the labels for 80 % power of the best constant bet for the true effect and the bound on every valid test
    (ratios to the model's z-test), next to the measured ratios of the planned test and the best constant bet."""
    def ratio(x: float | None, z: float | None) -> str:
        return "–" if x is None or z is None else f"{x / z:.2f}x"

    rows = ["| mode | challenger cheaper by | discordant frauds per 1,000 labels | won by the challenger "
            "| sign model: best constant bet / z-test | sign model: no valid test below "
            "| measured: planned test / z-test | measured: best constant bet in hindsight / z-test |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in numbers.items():
        m = r.get("sign_model")
        if m is None or m["win_share"] is None:
            continue
        planned = numbers.get(f"{name}_planned", {})
        mode = r["mode"] if r["mode"] == "shadow" else f"{r['mode']} 90/10"
        bet = "" if m["constant_bet"] is None else f" (bet {m['constant_bet']:g})"
        rows.append(f"| {mode} | {r['effect']:.1%} | {m['discordant_per_1k']:.3f} | {m['win_share']:.1%} | "
                    f"{ratio(m['constant_bet_labels'], m['z_test_labels'])}{bet} | "
                    f"{ratio(m['any_test_labels'], m['z_test_labels'])} | "
                    f"{ratio(planned.get('labels_for_80pct_power'), planned.get('z_test_labels_for_80pct_power'))} | "
                    f"{ratio(r['best_constant_bet_labels_for_80pct_power'], r['z_test_labels_for_80pct_power'])} |")
    return "\n".join(rows)


def readme_table(numbers: dict[str, dict[str, Any]]) -> str:
    """The README's table: per data set, mode and effect, power by 50k, median labels to a promotion, A/A
    false promotions, and labels for 80 % power against the fixed-horizon z-test's, with the best constant bet's
    (picked in hindsight: how close any single bettor could come)."""
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.1%}"

    def num(x: float | None) -> str:
        return "–" if x is None else f"{x:,.0f}"

    def interval(ci: list[float | None] | None) -> str:
        if ci is None:
            return ""
        lo, hi = ("beyond the horizon" if x is None else f"{x:.2f}" for x in ci)
        return f"; 95 % CI {lo}–{hi}"

    rows = ["| data | mode | challenger cheaper by | planned labels | promoted by 50k | promoted (horizon) "
            "| median labels to promotion | labels for 80 % power: test / z-test (ratio) "
            "| best constant bet in hindsight / z-test | rolled back |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in numbers.items():
        if r["criterion"] != "expected-cost" or r["amount_based_cost"] or r["challenger_weight"] != 0.1 \
                or "rho" in name:
            continue
        aa = name.startswith(("aa_", "real_aa_"))
        effect = "0 (A/A)" if aa else f"{r['effect']:.1%}"
        mode = r["mode"] if r["mode"] == "shadow" else f"{r['mode']} 90/10"
        power = "–" if aa or r["labels_for_80pct_power"] is None else (
            f"{num(r['labels_for_80pct_power'])} / {num(r['z_test_labels_for_80pct_power'])} "
            f"({r['ratio_to_z_test']:.2f}x{interval(r.get('ratio_to_z_test_95pct'))})")
        if not aa and r["labels_for_80pct_power"] is None and r["z_test_labels_for_80pct_power"] is not None:
            power = f"> {num(r['transactions'])} / {num(r['z_test_labels_for_80pct_power'])}"
        floor = "–" if aa or r["best_constant_bet_ratio_to_z_test"] is None else (
            f"{r['best_constant_bet_ratio_to_z_test']:.2f}x (bet {r['best_constant_bet']:g})")
        rows.append(f"| {r['data']} | {mode} | {effect} | {num(r['planned_labels'])} | {pct(r[f'promoted_by_{POWER_AT}'])} | "
                    f"{pct(r['promoted'])} of {num(r['transactions'])} | {num(r['median_transactions_to_promotion'])} | "
                    f"{power} | {floor} | {pct(r['rolled_back'])} |")
    return "\n".join(rows)
