"""`kingmaker demo`: the whole product on one machine, on the embedded default.

Today's steps (later parts add serving, traffic replay with delayed labels, drift and promotion):

1. Train an incumbent on the real data set — a class-weighted logistic regression, the kind of
   model a fraud team often runs today — and register it as ``@champion`` (when there is none).
2. Train the candidates (XGBoost, logistic regression, extra trees), choose one on
   cross-validation, and register it as ``@challenger``.
3. Print where everything is — the MLflow store, the registry aliases, how to open the UI — and
   the commands that run the rest of the loop by hand.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from training.cli import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--folds", type=int, default=5, help="CV folds for each training")
    p.add_argument("--n-jobs", type=int, default=2, help="threads per model fit")


def run(args: argparse.Namespace) -> int:
    from kingmaker.settings import MlflowSettings
    from training import pipeline
    from training.cli import load_data

    settings = MlflowSettings.from_env()
    ds = load_data(args)
    client = settings.client()
    has_champion = False
    if client.search_registered_models(f"name = '{settings.model_name}'"):
        has_champion = "champion" in (client.get_registered_model(settings.model_name).aliases or {})
    steps: list[tuple[str, pipeline.TrainConfig]] = []
    if not has_champion:
        steps.append(("incumbent (becomes @champion)", pipeline.TrainConfig(candidates=("logreg",), folds=args.folds,
                                                                            seed=args.seed, n_jobs=args.n_jobs)))
    steps.append(("candidates (best becomes @challenger)", pipeline.TrainConfig(folds=args.folds, seed=args.seed,
                                                                                 n_jobs=args.n_jobs)))
    for i, (title, cfg) in enumerate(steps, 1):
        print(f"\n== step {i}/{len(steps)}: train the {title} on {ds.name} ({len(ds.frame)} rows) ==")
        result = pipeline.train(ds, cfg, settings)
        print(result.table.to_string(index=False))
        print(f"-> models:/{result.model_name}@{result.alias} = version {result.version}")

    aliases = client.get_registered_model(settings.model_name).aliases
    print("\n== registry ==")
    for alias, version in sorted(aliases.items()):
        mv = client.get_model_version(settings.model_name, version)
        print(f"  @{alias:<11} version {version}  {mv.tags.get('kingmaker.candidate', '?'):<8} "
              f"test PR-AUC {mv.tags.get('test.pr_auc', '?')}  cost/1k {mv.tags.get('test.expected_cost_per_1k', '?')}")
    print(f"\nMLflow store: {settings.tracking_uri}")
    if settings.is_local_sqlite:
        print(f"browse it:    .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --host 127.0.0.1")
    print("\nthe rest of the loop, by hand (see the README):")
    print("  .venv/bin/kingmaker serve --mode shadow     # both arms and the router on 127.0.0.1:3000-3002")
    print("  .venv/bin/kingmaker drift --window 1h       # once traffic has been logged")
    print("  .venv/bin/kingmaker promote --dry-run       # what the controller would decide now, and why")
    return 0
