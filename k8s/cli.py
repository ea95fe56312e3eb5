"""``kingmaker promote``: the promotion controller, locally or against a cluster.

    kingmaker promote --dry-run [--json]     the current decision and its evidence; changes nothing
    kingmaker promote --approve              approve the current challenger (approval: manual) and promote it
    kingmaker promote --once                 one reconcile (observe -> decide -> act), then exit
    kingmaker promote                        reconcile every evaluation interval, in the foreground
    kingmaker promote --kubernetes           the same for the cluster's ChampionChallengers (Lease-elected; it
                                             watches them and acts on a spec change at once)

The policy comes from ``--policy FILE`` (a ``ChampionChallenger`` YAML, e.g. ``k8s/examples/...``; the loop
re-reads it when it changes, and an invalid edit keeps the last good policy) or the CRD defaults. Heavy
imports happen in `run` only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kingmaker.settings import ControllerSettings, DriftSettings, LogSettings, MlflowSettings, environment_help

if TYPE_CHECKING:
    from k8s.controller import Controller
    from k8s.decide import Decision
    from k8s.local import PolicyFile
    from k8s.observe import Sources
    from k8s.state import Spec, Status


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _lease_seconds(text: str) -> int:
    value = int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds >= 3, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = environment_help(MlflowSettings, LogSettings, (DriftSettings, "output_dir"), ControllerSettings)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print the current decision and its evidence; act on nothing")
    what.add_argument("--approve", action="store_true",
                      help="approve the current challenger version and promote it if the evidence supports it")
    what.add_argument("--once", action="store_true", help="run one reconcile and exit (default: loop)")
    p.add_argument("--json", action="store_true", help="with --dry-run: print JSON instead of a table")
    p.add_argument("--policy", type=Path, help="ChampionChallenger YAML (CR format) with the model, traffic and "
                   "policy, re-read when it changes (default: the CRD defaults for the configured model)")
    p.add_argument("--name", help="resource name (default: metadata.name of --policy, else the model name)")
    p.add_argument("--interval", type=_positive, help="seconds between reconciles (default: the policy's "
                   "evaluationIntervalSeconds); with --kubernetes, between retries of a swap under way (at most 10)")
    p.add_argument("--mode", choices=["split", "shadow"], help="traffic mode without --policy (default split)")
    p.add_argument("--challenger-weight", type=float, help="challenger share without --policy (default 0.1)")
    src = p.add_argument_group("observation sources")
    src.add_argument("--prometheus-url", help="Prometheus for the guardrails (default $KINGMAKER_PROMETHEUS_URL; "
                     "without one no guardrail is readable and nothing is promoted)")
    src.add_argument("--prometheus-timeout", type=float, default=5.0, help="seconds per Prometheus query")
    src.add_argument("--prometheus-selector", default="",
                     help='extra label matchers for every query, e.g. namespace="fraud"')
    src.add_argument("--guardrail-window", default="10m", help="PromQL range of the guardrail rates")
    src.add_argument("--drift-dir", type=Path, help="folder of drift job results (default $KINGMAKER_DRIFT_OUTPUT_DIR, "
                     "else $KINGMAKER_HOME/drift)")
    src.add_argument("--drift-from-prometheus", action="store_true",
                     help="read the drift job's pushed gauges through Prometheus instead of drift.json")
    src.add_argument("--drift-max-age-hours", type=float, default=48.0,
                     help="an older drift result counts as missing (blocks promotion)")
    src.add_argument("--metrics-port", type=int, help="serve the controller's /metrics here (default: 8080 with "
                     "--kubernetes, off locally)")
    kube = p.add_argument_group("kubernetes")
    kube.add_argument("--kubernetes", action="store_true", help="act on the cluster (in-cluster config or kubeconfig)")
    kube.add_argument("--namespace", help="namespace of the resources (default: the pod's / kubeconfig's)")
    kube.add_argument("--lease-name", default="kingmaker-controller", help="Lease used for leader election")
    kube.add_argument("--identity", help="leader-election identity (default <hostname>_<pid>)")
    kube.add_argument("--lease-duration", type=_lease_seconds, default=30,
                      help="seconds a leader's Lease stays valid unrenewed; it renews every sixth of that and "
                           "stops acting after two thirds")
    kube.add_argument("--container", default="scorer", help="Scorer container name in the arm Deployments, which "
                      "are found by their labels kingmaker.io/championchallenger=<name> and kingmaker.io/arm (every "
                      "colour's)")
    kube.add_argument("--router-configmap", default="{name}-router",
                      help="ConfigMap holding router.yaml ({name}: the ChampionChallenger's name)")


# --- wiring -------------------------------------------------------------------------------------

def _spec(args: argparse.Namespace, model_name: str,
          on_reload: Callable[[str, str], None]) -> Spec | PolicyFile:
    """The resource from ``--policy`` (re-read when the file changes), or the CRD defaults with
    ``--mode``/``--challenger-weight``; validated by `k8s.state.parse_spec` (so `k8s.policy.parse_policy`) either way."""
    from dataclasses import replace

    from k8s.local import PolicyFile
    from k8s.state import parse_spec
    from kingmaker.errors import PermanentError

    if args.policy is not None:
        if args.mode or args.challenger_weight is not None:
            raise PermanentError("--mode/--challenger-weight apply without --policy only (edit spec.traffic)")
        return PolicyFile(args.policy, default_name=model_name, name=args.name, on_reload=on_reload)
    traffic = {"mode": args.mode or "split"}
    if args.challenger_weight is not None:
        traffic["challengerWeight"] = args.challenger_weight
    try:
        spec = parse_spec({"spec": {"modelName": model_name, "traffic": traffic}}, default_name=model_name)
    except PermanentError as exc:
        raise PermanentError(f"--mode/--challenger-weight: {exc}") from None
    return replace(spec, name=args.name) if args.name else spec


def _sources(args: argparse.Namespace, home: Path) -> Sources:
    from k8s.observe import DriftSource, GuardrailSource, Sources
    from k8s.sources.drift import FileDrift, NoDrift, PrometheusDrift
    from k8s.sources.logs import LogWindows
    from k8s.sources.prometheus import GuardrailQueries, NoGuardrails, PrometheusAPI, PrometheusGuardrails

    logs = LogSettings.from_env(home)
    url = args.prometheus_url or ControllerSettings.from_env().prometheus_url
    prometheus = PrometheusAPI(url, timeout=args.prometheus_timeout) if url else None
    guardrails: GuardrailSource = (
        PrometheusGuardrails(prometheus, GuardrailQueries(args.guardrail_window, args.prometheus_selector))
        if prometheus else NoGuardrails())
    max_age = args.drift_max_age_hours * 3600.0
    drift: DriftSource
    if args.drift_from_prometheus:
        drift = PrometheusDrift(prometheus, max_age_seconds=max_age, selector=args.prometheus_selector) \
            if prometheus else NoDrift()
    else:
        drift = FileDrift(args.drift_dir or DriftSettings.from_env().results_dir(home), max_age)
    return Sources(LogWindows(logs.predictions_url, logs.labels_url), guardrails, drift)


def _start_metrics(port: int | None, metrics: Any) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, registry=metrics.registry)


# --- output -------------------------------------------------------------------------------------

def _num(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def decision_document(spec: Spec, status: Status, decision: Decision) -> dict[str, Any]:
    from k8s.state import json_safe

    return json_safe({"resource": spec.name, "model": spec.model_name, "phase": status.phase.value,
                      "outcome": decision.outcome.value, "reason": decision.reason.value, "message": decision.message,
                      "awaiting_approval": decision.awaiting_approval, "would_act": decision.act,
                      "looks": decision.state.looks, "evidence": decision.evidence.as_dict()})


def decision_table(spec: Spec, status: Status, decision: Decision) -> str:
    ev, policy = decision.evidence, spec.policy
    g = policy.guardrails
    rows = [
        ("", "champion", "challenger"),
        ("version", ev.champion.version, ev.challenger.version),
        ("matured labelled", ev.champion.labelled, ev.challenger.labelled),
        ("matured frauds", ev.champion.positives, ev.challenger.positives),
        ("not yet matured", ev.champion.immature, ev.challenger.immature),
        ("unlabelled (left out)", ev.champion.unlabelled, ev.challenger.unlabelled),
        (f"{policy.criterion.value}", _num(ev.champion.estimate), _num(ev.challenger.estimate)),
    ]
    width = max(len(str(r[0])) for r in rows) + 2
    lines = [f"{spec.name}: model {spec.model_name}, {ev.mode.value} mode ({ev.comparison.value} comparison), "
             f"challenger weight {spec.traffic.challenger_weight:g}, criterion {policy.criterion.value}, "
             f"alpha {policy.alpha:g}, phase {status.phase.value}"]
    lines += [f"  {a!s:<{width}}{b!s:>12}{c!s:>12}" for a, b, c in rows]
    if ev.difference is not None:
        ci = "" if ev.interval is None else f"  always-valid CS [{_num(ev.interval[0])}, {_num(ev.interval[1])}]"
        lines.append(f"  {'difference':<{width}}{_num(ev.difference):>12}{ci}")
    if ev.p_better is not None:
        lines.append(f"  {'p better / worse':<{width}}{_num(ev.p_better, '.3g'):>12}{_num(ev.p_worse, '.3g'):>12}")
    lines.append(f"  {'guardrails':<{width}}error rate {_num(ev.guardrails.error_rate, '.2%')} "
                 f"(max {g.max_error_rate:.2%}), p99 {_num(ev.guardrails.p99_latency_seconds, '.3g')}s "
                 f"(max {g.max_p99_latency_seconds:g}s), score PSI {_num(ev.score_psi, '.3g')} (max {g.max_score_psi:g})")
    verdict = f"{decision.outcome.value} ({decision.reason.value})"
    if decision.awaiting_approval:
        verdict += " - awaiting approval: kingmaker promote --approve"
    lines.append(f"  {'decision':<{width}}{verdict}")
    lines.append(f"  {'':<{width}}{decision.message}")
    lines.append(f"  looks so far: {decision.state.looks - 1} recorded (this one not recorded: dry run)")
    return "\n".join(lines)


def _print_decision(args: argparse.Namespace, spec: Spec, status: Status, decision: Decision) -> None:
    import json

    if args.json:
        print(json.dumps(decision_document(spec, status, decision), indent=1))
    else:
        print(decision_table(spec, status, decision))


def _print_result(spec: Spec, result: Any) -> int:
    if result is None:
        print(f"{spec.name}: reconcile failed (see the log); nothing more was done")
        return 1
    status = result.status
    if result.decision is not None:
        from k8s.act import summary

        print(f"{spec.name}: {summary(result.decision)}")
    print(f"{spec.name}: phase {status.phase.value}, champion v{status.champion_version}, "
          f"challenger {('v' + status.challenger_version) if status.challenger_version else 'none'}")
    return 0


def _approvable(controller: Controller, spec: Spec, status: Status) -> str | None:
    """The challenger version to approve, or None (saying why) when the evidence would not promote it."""
    import time
    from dataclasses import replace

    from k8s.act import current_pair
    from k8s.decide import Reason
    from kingmaker.errors import PermanentError

    pair = current_pair(controller.ports.registry, spec)
    if pair.challenger is None:
        raise PermanentError(f"{spec.model_name} has no @{spec.challenger_alias}: nothing to approve")
    decision = controller.evaluate(replace(spec, approved_challenger_version=pair.challenger), status, pair, time.time())
    if decision.reason is not Reason.CHALLENGER_BETTER:
        print(f"not approving challenger v{pair.challenger}: {decision.outcome.value} ({decision.reason.value}): "
              f"{decision.message}")
        return None
    return pair.challenger


# --- local mode ---------------------------------------------------------------------------------

def _local(args: argparse.Namespace) -> int:
    import threading

    from k8s.act import ControllerMetrics, Ports
    from k8s.controller import Controller, loop
    from k8s.local import LocalLock, LocalServing, LocalStore
    from k8s.sources.registry import MlflowRegistry
    from kingmaker.errors import TemporaryError
    from kingmaker.settings import default_home

    home = default_home()
    mlflow = MlflowSettings.from_env(home)
    metrics = ControllerMetrics()

    def on_reload(outcome: str, message: str) -> None:
        metrics.policy_reloaded(store.name, outcome)
        if outcome == "invalid":
            store.event("Warning", "PolicyRejected", message)

    store = LocalStore(home / "controller", _spec(args, mlflow.model_name, on_reload))
    spec = store.spec
    ports = Ports(MlflowRegistry(mlflow.client(), spec.model_name), LocalServing(home / "serving", spec.model_name),
                  store, metrics)
    controller = Controller(store, ports, _sources(args, home))
    lock = LocalLock(home / "controller" / f"{spec.name}.lock")

    if args.dry_run:
        return _dry_run(args, controller)
    if args.approve:
        spec, status = store.load()
        version = _approvable(controller, spec, status)
        if version is None:
            return 1
        store.approve(version)
        print(f"approved challenger v{version} of {spec.model_name}")
        try:
            lock.acquire()
        except TemporaryError as exc:
            print(f"{exc}; the running controller promotes it at its next look")
            return 0
        try:
            return _print_result(spec, controller.run_once())
        finally:
            lock.release()

    lock.acquire()
    try:
        if args.once:
            return _print_result(spec, controller.run_once())
        _start_metrics(args.metrics_port, metrics)
        interval = (lambda: float(args.interval)) if args.interval else (
            lambda: float(store.load()[0].policy.evaluation_interval_seconds))
        print(f"kingmaker promote: watching {spec.model_name} every {interval():g}s (Ctrl-C stops)", flush=True)
        loop(controller, interval, threading.Event())
        return 0
    finally:
        lock.release()


def _dry_run(args: argparse.Namespace, controller: Controller) -> int:
    import json
    import time

    from k8s.act import current_pair
    from k8s.state import UNFINISHED

    spec, status = controller.resource.load()
    pair = current_pair(controller.ports.registry, spec)
    if status.phase in UNFINISHED:
        note = (f"{spec.name}: a {status.phase.value} of {status.champion_version} -> {status.challenger_version} "
                f"is under way; the next reconcile finishes it")
        print(json.dumps({"resource": spec.name, "phase": status.phase.value, "message": note}) if args.json else note)
        return 0
    if pair.challenger is None:
        note = f"{spec.name}: champion v{pair.champion}, no @{spec.challenger_alias}: nothing to decide"
        print(json.dumps({"resource": spec.name, "phase": status.phase.value, "champion": pair.champion,
                          "challenger": None, "message": note}) if args.json else note)
        return 0
    decision = controller.evaluate(spec, status, pair, time.time())
    _print_decision(args, spec, status, decision)
    return 0


# --- Kubernetes mode ----------------------------------------------------------------------------

def _kubernetes(args: argparse.Namespace) -> int:
    import signal
    import threading

    from k8s.act import ControllerMetrics, Ports
    from k8s.controller import Controller, operate
    from k8s.kube import Kube, KubeResource, KubeServing, ServingNames
    from k8s.lease import LeaseElector, default_identity
    from k8s.resource import PLURAL
    from k8s.sources.registry import MlflowRegistry
    from k8s.state import parse_spec
    from k8s.watch import ResourceWatch
    from kingmaker.settings import default_home

    kube = Kube.connect(args.namespace)
    mlflow = MlflowSettings.from_env()
    metrics = ControllerMetrics()
    sources = _sources(args, default_home())
    identity = args.identity or default_identity()
    elector = LeaseElector(kube, args.lease_name, identity, lease_seconds=args.lease_duration,
                           renew_deadline=args.lease_duration * 2 / 3, retry_period=args.lease_duration / 6)
    names = ServingNames(container=args.container, router_configmap=args.router_configmap)

    def controller_for(doc: Mapping[str, Any]) -> Controller:
        name = str(doc["metadata"]["name"])
        model = str((doc.get("spec") or {}).get("modelName") or mlflow.model_name)
        resource = KubeResource(kube, name, identity=identity, guard=elector.guard)
        ports = Ports(MlflowRegistry(mlflow.client(), model), KubeServing(kube, names.resolve(name), model),
                      resource, metrics, guard=elector.guard)
        return Controller(resource, ports, sources)

    if args.dry_run or args.approve:
        name = args.name or mlflow.model_name
        controller = controller_for(kube.get(name))
        if args.dry_run:
            return _dry_run(args, controller)
        spec, status = controller.resource.load()
        version = _approvable(controller, spec, status)
        if version is None:
            return 1
        kube.approve(name, version, spec.resource_version)
        print(f"approved challenger v{version} on {name}; the leading controller, which watches it, promotes it now")
        return 0

    if args.once:
        if not elector.try_acquire_or_renew():
            print(f"another replica holds Lease {args.lease_name}: not acting")
            return 1
        try:
            name = args.name or mlflow.model_name
            return _print_result(parse_spec(kube.get(name)), controller_for(kube.get(name)).run_once())
        finally:
            elector.release()

    stop = threading.Event()
    feed = ResourceWatch(kube)

    def shutdown(*_: Any) -> None:
        stop.set()
        feed.wake()

    signal.signal(signal.SIGTERM, shutdown)
    _start_metrics(8080 if args.metrics_port is None else args.metrics_port, metrics)
    renewer = threading.Thread(target=elector.run, args=(stop,), name="lease", daemon=True)
    renewer.start()
    threading.Thread(target=feed.run, args=(stop,), name="watch", daemon=True).start()
    print(f"kingmaker promote: controller {identity} in namespace {kube.namespace} (Lease {args.lease_name}), "
          f"watching {PLURAL}", flush=True)
    try:
        operate(feed, controller_for, elector, stop,
                tick=min(10.0, args.interval) if args.interval else 10.0, metrics=metrics)
    finally:
        shutdown()
        renewer.join(timeout=elector.retry_period + kube.timeout)
    return 0


def run(args: argparse.Namespace) -> int:
    from kingmaker.mlflow_errors import bound_http_retries

    bound_http_retries()  # a registry outage is a held reconcile within seconds, not minutes of MLflow retries
    return _kubernetes(args) if args.kubernetes else _local(args)
