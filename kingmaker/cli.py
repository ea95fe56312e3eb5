"""The `kingmaker` command line: one console script, one subcommand per job.

Each subcommand lives with its part (``training/cli.py``, ``drift_service/cli.py`` ...) and exposes
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when chosen, so
``kingmaker --help`` stays fast. User-facing failures are `KingmakerError`s: one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from kingmaker import __version__
from kingmaker.errors import KingmakerError
from kingmaker.settings import MlflowSettings, environment_help

#: name -> (module, one-line summary). Benchmarks are ``kingmaker bench <name>``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("kingmaker.demo", "the whole loop on this machine and the real data: train, serve, replay, decide, report"),
    "train": ("training.cli", "train candidates on a data set and register the chosen one in MLflow"),
    "retrain": ("training.retrain_cli", "train a challenger on the served, labelled traffic; register it only if "
                "it passes the gate against the champion"),
    "serve": ("bentos.cli", "serve champion and challenger behind the Router as local bentoml processes"),
    "drift": ("drift_service.cli", "measure drift of the latest prediction-log window from the champion's reference"),
    "promote": ("k8s.cli", "the promotion controller: decide, promote or roll back the challenger (local or --kubernetes)"),
}
BENCHMARKS: dict[str, tuple[str, str]] = {
    "quality": ("training.bench", "model quality on the real data: 5-fold CV and a time-ordered split"),
    "serving": ("bentos.bench", "wrk load test: Router vs Scorer vs mlflow models serve, and 10k-row batch scoring"),
    "promotion": ("k8s.bench", "promotion decision: A/A false promotions, power and samples to decision"),
    "drift": ("drift_service.bench", "drift analysis speed: 1M rows x 30 features vs a 100k reference, and time vs rows"),
}

EPILOG = environment_help(MlflowSettings) + """

Run `kingmaker <command> --help` for the options of one command and the environment it reads."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless its help already says it, or there is nothing to show; keeps the
    layout of the description and the "environment:" epilog (`kingmaker.settings.environment_help`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _load(module: str) -> object:
    return importlib.import_module(module)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kingmaker",
        description="Champion/challenger serving for fraud-detection models: train, serve, "
        "detect drift and promote the challenger only when it has proven better.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kingmaker {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much the logs say (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module, summary) in COMMANDS.items():
        cmd = sub.add_parser(name, help=summary, description=summary,
                             formatter_class=_HelpFormatter)
        cmd.set_defaults(_module=module)
        _load(module).add_arguments(cmd)  # type: ignore[attr-defined]
    bench = sub.add_parser("bench", help="run a benchmark and print/save its numbers",
                           description="Benchmarks measure speed and quality; results go to stdout "
                           "and bench-results/<name>.json.")
    bench_sub = bench.add_subparsers(dest="benchmark", metavar="<benchmark>", required=True)
    for name, (module, summary) in BENCHMARKS.items():
        cmd = bench_sub.add_parser(name, help=summary, description=summary,
                                   formatter_class=_HelpFormatter)
        cmd.set_defaults(_module=module)
        _load(module).add_arguments(cmd)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return int(_load(args._module).run(args))  # type: ignore[attr-defined]
    except KingmakerError as exc:
        print(f"kingmaker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kingmaker {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
