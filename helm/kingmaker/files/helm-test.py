"""`helm test`: the routed endpoint answers, through the client Service and through every colour's Router.

Run by the test hook Job (templates/tests/test-job.yaml) with the kingmaker image; standard library only:

    python helm-test.py [--predict] [--timeout SECONDS] URL [URL ...]

For each Router URL: ``GET /readyz`` is 200; ``POST /routing`` reports a valid traffic file and a
champion arm whose model the Router has discovered; with ``--predict`` one ``POST /predict`` (a row of
zeros shaped like the champion's signature, request id ``helm-test-...``) is answered by an arm with a
model version. A scoring token, if the Router needs one, is read from $KINGMAKER_SCORING_TOKEN_FILE.
Prints one line per check; exit 0 when all pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

ZERO = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}


class Failed(Exception):
    """One check did not pass (the message says which and why)."""


def _token() -> str | None:
    path = os.environ.get("KINGMAKER_SCORING_TOKEN_FILE")
    if not path:
        return None
    with open(path) as fh:
        lines = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    return lines[0] if lines else None


def call(url: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    token = _token()
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = raw.decode(errors="replace")[:200]
    return status, headers, doc


def routed(url: str) -> dict[str, Any]:
    """The champion's model as the Router knows it; raises Failed while it is not usable."""
    status, _, _ = call(url, "/readyz")
    if status != 200:
        raise Failed(f"GET {url}/readyz answered {status}")
    status, _, doc = call(url, "/routing", {})
    if status != 200 or not isinstance(doc, dict):
        raise Failed(f"POST {url}/routing answered {status}: {doc}")
    if doc.get("config_error"):
        raise Failed(f"{url}: the traffic file is rejected: {doc['config_error']}")
    champion = (doc.get("arms") or {}).get("champion") or {}
    if not champion.get("model"):
        raise Failed(f"{url}: the Router has not discovered the champion's model yet (arm {champion.get('url')})")
    return dict(champion["model"])


def predict(url: str, model: dict[str, Any]) -> str:
    features = {name: ZERO.get(kind, 0.0) for name, kind in zip(model["features"], model["feature_types"], strict=True)}
    body = {"request_id": f"helm-test-{uuid.uuid4().hex[:12]}", "features": features}
    status, headers, doc = call(url, "/predict", body)
    version = {k.lower(): v for k, v in headers.items()}.get("x-model-version")
    if status != 200 or not version:
        raise Failed(f"POST {url}/predict answered {status} (model version {version!r}): {doc}")
    return f"{doc.get('arm') if isinstance(doc, dict) else '?'} arm, {model['model_name']} v{version}"


def check(url: str, with_predict: bool, deadline: float) -> str:
    """Retry until the Router is usable or the deadline passes (it discovers its arms after start)."""
    while True:
        try:
            model = routed(url)
            return predict(url, model) if with_predict else f"champion {model['model_name']} v{model['model_version']}"
        except (Failed, OSError) as exc:
            if time.monotonic() >= deadline:
                raise Failed(str(exc)) from None
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("urls", nargs="+", metavar="URL", help="Router base URLs (the client Service, each colour's)")
    p.add_argument("--predict", action="store_true", help="also send one /predict")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each Router")
    args = p.parse_args(argv)
    failed = 0
    for url in args.urls:
        try:
            print(f"ok   {url}: {check(url, args.predict, time.monotonic() + args.timeout)}", flush=True)
        except Failed as exc:
            failed += 1
            print(f"FAIL {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
