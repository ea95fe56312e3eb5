"""The watch of ChampionChallengers (k8s/watch.py): list, then the official client's watch stream from the
list's resourceVersion, resumed after the server ends it, listed again on 410 Gone, backed off on errors.
Against the recording fake API server, whose watch streams are scripted (fake_kube.py)."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from k8s.kube import Kube
from k8s.watch import ResourceWatch

from .fake_kube import NS, FakeApiServer

PATH = f"/apis/kingmaker.io/v1alpha1/namespaces/{NS}/championchallengers"


def cc(name: str, rv: str, generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "kingmaker.io/v1alpha1", "kind": "ChampionChallenger",
            "metadata": {"name": name, "resourceVersion": rv, "generation": generation}, "spec": {"modelName": name}}


def event(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def gone(rv: str) -> dict[str, Any]:
    return event("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
                           "message": f"too old resource version: {rv} (900)", "code": 410})


@pytest.fixture
def server() -> FakeApiServer:
    s = FakeApiServer()
    s.put("cc", cc("a", "1"))
    return s


def run_until_scripts_are_used(server: FakeApiServer, watch: ResourceWatch) -> None:
    """Run the watch loop until the fake has played every scripted watch (it then stops the loop)."""
    stop = threading.Event()
    scripts = list(server.watches)
    server.watches = [*scripts, []]  # the last, empty watch ends the loop through `stop`
    original = server.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if "watch=true" in url and len(server.watches) == 1:
            stop.set()
        return original(method, url, *args, **kwargs)

    server.request = request  # type: ignore[method-assign]
    worker = threading.Thread(target=watch.run, args=(stop,))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()


def watch_requests(server: FakeApiServer) -> list[dict[str, list[str]]]:
    return [r.query for r in server.sent("GET", "championchallengers$") if r.query.get("watch") == ["true"]]


def test_lists_then_watches_from_the_lists_resource_version_and_follows_the_events(server: FakeApiServer,
                                                                                   kube: Kube) -> None:
    b2 = cc("b", "203", generation=2)
    server.watches = [[event("ADDED", cc("b", "202")), event("MODIFIED", b2), event("BOOKMARK", {
        "kind": "ChampionChallenger", "metadata": {"resourceVersion": "250"}})],
        [event("DELETED", cc("a", "260"))]]
    watch = ResourceWatch(kube, timeout_seconds=120)
    assert watch.resources() == [] and not watch.synced.is_set()
    run_until_scripts_are_used(server, watch)

    assert watch.synced.is_set()
    assert watch.resources() == [b2]  # b added then changed; a deleted
    assert len([r for r in server.sent("GET", "championchallengers$") if "watch" not in r.query]) == 1  # one list
    first, second, _ = watch_requests(server)
    list_rv = str(server._rv)  # the list answers with the newest resourceVersion
    assert (first["resourceVersion"], first["timeoutSeconds"], first["allowWatchBookmarks"]) == (
        [list_rv], ["120"], ["true"])
    assert second["resourceVersion"] == ["250"]  # resumed after the bookmark, not listed again
    assert watch.wait(0) is True and watch.wait(0) is False  # a change woke it; waking clears


def test_410_gone_lists_again_and_watches_from_the_new_list(server: FakeApiServer, kube: Kube) -> None:
    server.watches = [[gone("5")], [event("MODIFIED", cc("a", "300", generation=2))]]
    watch = ResourceWatch(kube)
    run_until_scripts_are_used(server, watch)
    lists = [r for r in server.sent("GET", "championchallengers$") if "watch" not in r.query]
    assert len(lists) == 2
    assert [q["resourceVersion"] for q in watch_requests(server)][1:] == [
        [str(server._rv)], ["300"]]  # the new list's version, then the event's
    assert watch.resources()[0]["metadata"]["generation"] == 2


def test_errors_keep_the_cache_and_back_off_then_resume_from_the_same_version(
        server: FakeApiServer, kube: Kube, caplog: pytest.LogCaptureFixture) -> None:
    server.watches = [500, 403, [event("MODIFIED", cc("a", "400", generation=3))]]
    watch = ResourceWatch(kube, backoff=(0.01, 0.015))
    run_until_scripts_are_used(server, watch)
    assert len([r for r in server.sent("GET", "championchallengers$") if "watch" not in r.query]) == 1
    versions = [q["resourceVersion"] for q in watch_requests(server)]
    assert versions[:3] == [versions[0]] * 3  # resumed where it was, no relist
    assert [copy.deepcopy(d)["metadata"]["generation"] for d in watch.resources()] == [3]
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and "500" in retries[0] and "403" in retries[1]
    assert retries[0].endswith("retrying in 0.01s") and retries[1].endswith("retrying in 0.015s")  # doubled, capped


def test_a_failed_first_list_is_retried_and_wait_times_out_quietly(server: FakeApiServer, kube: Kube) -> None:
    server.failures = [("GET", "championchallengers$", 503)]
    server.watches = [[]]
    watch = ResourceWatch(kube, backoff=(0.01, 0.01))
    assert watch.wait(0.01) is False
    run_until_scripts_are_used(server, watch)
    assert watch.synced.is_set() and [d["metadata"]["name"] for d in watch.resources()] == ["a"]
