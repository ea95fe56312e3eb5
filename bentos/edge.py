"""What BentoML does at the HTTP edge that a hostile client could exploit, made safe for both services.

Two changes to BentoML 1.4's service app, applied by `install` (once per process, before an app is built;
each checks that BentoML still looks as expected and otherwise leaves it alone with a warning, like
`bentos.lifecycle.fix_bentoml_request_timers`):

- **Bounded path labels.** BentoML's traffic-metrics middleware labels every request with its raw path, so
  300 requests to random paths made 6,000 series. `PathLabels`, put in front of it, sends a request for a
  path the service does not have on as `NOT_FOUND_PATH`: one label value for every unknown path, and the
  `bentos.auth.GuardMiddleware` answers it with a JSON 404.
- **Error answers of our shape, logged in one line.** A body that does not parse or validate used to be
  answered by BentoML with its internal model name, pydantic documentation links and, for form bodies, the
  whole body in ``loc``, and logged as a full traceback at ERROR (2 KB per 16-byte request). The endpoint
  wrapper here answers ``{"code", "error", "detail"}`` (`bentos.answers`), logs client errors as one INFO
  line, rate-limited, and keeps tracebacks for what is really a server error.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from bentos.answers import error_body, rate_limited
from bentos.messages import REQUEST_ID_RULE, ErrorCode
from bentos.validation import InvalidRequest, Problem

log = logging.getLogger(__name__)

NOT_FOUND_PATH = "/_unknown_path"
#: BentoML's own routes (system routes and the OpenAPI/UI pages).
BUILTIN_PATHS = frozenset({"/", "/docs.json", "/schema.json", "/metrics", "/livez", "/readyz", "/healthz"})
_LOC_CHARS = 64  # a field name echoed in an error answer is cut to this many characters

_STATUS_CODES = {401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.UNAUTHORIZED, 404: ErrorCode.NOT_FOUND,
                 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.TOO_LARGE, 415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                 503: ErrorCode.NOT_READY, 504: ErrorCode.TIMEOUT}


@dataclass(frozen=True)
class Routes:
    """The paths one service answers: ``json`` POST endpoints (BentoML APIs, JSON bodies), ``raw`` POST
    endpoints of mounted apps (their own body formats), and BentoML's built-in pages and static files."""

    json: frozenset[str]
    raw: frozenset[str]
    static: frozenset[str]

    @property
    def posts(self) -> frozenset[str]:
        return self.json | self.raw

    def known(self, path: str) -> bool:
        return path in self.json or path in self.raw or path in BUILTIN_PATHS or path in self.static

    @classmethod
    def of(cls, service: Any) -> Routes:
        prefix = getattr(service, "path_prefix", "") or ""
        json = {posixpath.join("/", prefix.strip("/"), api.route.lstrip("/")) for api in service.apis.values()}
        raw = {posixpath.join("/", prefix.strip("/"), path.strip("/"), getattr(route, "path", "").lstrip("/"))
               for app, path, _ in getattr(service, "mount_apps", ()) for route in getattr(app, "routes", ())}
        return cls(frozenset(json), frozenset(raw), _static_files())


def _static_files() -> frozenset[str]:
    """The files BentoML's index page serves (a closed set: anything else under these folders is unknown)."""
    found: set[str] = set()
    try:
        import _bentoml_impl.server as impl
        from bentoml._internal import server
    except ImportError:  # pragma: no cover - BentoML not installed
        return frozenset()
    for url, folder in (("/static_content", Path(server.__file__).parent / "static_content"),
                        ("/assets", Path(impl.__file__).parent / "assets")):
        if folder.is_dir():
            found.update(f"{url}/{f.relative_to(folder).as_posix()}" for f in folder.rglob("*") if f.is_file())
    return frozenset(found)


class PathLabels:
    """ASGI middleware in front of BentoML's: a request for a path the service does not have goes on as
    `NOT_FOUND_PATH`, so metrics label every unknown path with one value."""

    def __init__(self, app: Any, routes: Routes):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.routes.known(scope["path"]):
            scope = {**scope, "path": NOT_FOUND_PATH, "raw_path": NOT_FOUND_PATH.encode()}
        await self.app(scope, receive, send)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "refused"


def _cut(part: object) -> str | int:
    if isinstance(part, int):
        return part
    text = str(part)
    return text if len(text) <= _LOC_CHARS else text[:_LOC_CHARS] + "..."


def validation_problems(errors: Iterable[Any]) -> list[Problem]:
    """pydantic's errors as `Problem` s: location parts cut short, messages in our words where pydantic's
    would be cryptic (a pattern), no documentation links, no input values."""
    problems = []
    for e in errors:
        loc = tuple(_cut(p) for p in e.get("loc", ()))
        msg = f"must be {REQUEST_ID_RULE}" if e.get("type") == "string_pattern_mismatch" else str(e.get("msg"))
        problems.append(Problem(loc, msg[:200], str(e.get("type"))))
    return problems


async def _api_endpoint_wrapper(self: Any, name: str, request: Any) -> Any:
    """BentoML 1.4.40's ``ServiceAppFactory.api_endpoint_wrapper`` with our error answers and logging."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.responses import JSONResponse

    path = request.url.path
    try:
        resp = await self.api_endpoint(name, request)
    except ValidationError as exc:
        refused = InvalidRequest(validation_problems(exc.errors(include_url=False, include_context=False,
                                                                include_input=False)))
        rate_limited("400", "refused with 400 invalid_request on %s: %s", path, refused)
        resp = JSONResponse(refused.body(), status_code=400)
    except BentoMLException as exc:
        status = exc.error_code.value
        code = _STATUS_CODES.get(status, ErrorCode.INVALID_REQUEST if status < 500 else ErrorCode.INTERNAL)
        if status < 500:
            message = _phrase(status)
            rate_limited(str(status), "refused with %d %s on %s: %s", status, code, path, str(exc)[:300])
        else:
            log.error("%s failed with %d", path, status, exc_info=True)
            message = "the service cannot answer this request; its log has the details"
        resp = JSONResponse(error_body(code, message), status_code=status)
    except Exception:
        log.error("unexpected error on %s", path, exc_info=True)
        resp = JSONResponse(error_body(ErrorCode.INTERNAL, "internal error; the service log has the details"),
                            status_code=500)
    # the rest as in BentoML: response headers, background tasks, request clean-up
    self._add_response_headers(resp)
    ctx = self.service.context
    if resp.background is not None:
        ctx.response.background.tasks.append(resp.background)
    ctx.response.background.add_task(request.close)
    resp.background = ctx.response.background
    del ctx.response.background
    return resp


def install() -> bool:
    """Apply both changes to BentoML's service app (see the module docstring). False if BentoML changed."""
    try:
        from _bentoml_impl.server.app import ServiceAppFactory
        from starlette.middleware import Middleware
    except ImportError:  # pragma: no cover - BentoML not installed
        return False
    if getattr(ServiceAppFactory, "_kingmaker_edge", False):
        return True
    middlewares = ServiceAppFactory.__dict__.get("middlewares")
    if not isinstance(middlewares, property) or middlewares.fget is None or not all(
            hasattr(ServiceAppFactory, a) for a in ("api_endpoint_wrapper", "api_endpoint", "_add_response_headers")):
        log.warning("BentoML's service app changed: unknown paths and error answers are left as BentoML has them")
        return False
    original = middlewares.fget

    def with_path_labels(self: Any) -> list[Any]:
        return [Middleware(PathLabels, routes=Routes.of(self.service)), *original(self)]

    ServiceAppFactory.middlewares = property(with_path_labels)
    ServiceAppFactory.api_endpoint_wrapper = _api_endpoint_wrapper
    ServiceAppFactory._kingmaker_edge = True
    return True
