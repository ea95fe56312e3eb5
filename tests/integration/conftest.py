import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from . import stores
from .bentos_support import serving_home  # noqa: F401  (a session fixture for every integration test)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests drive real third-party servers and stores: their deprecation warnings are
    reported, not turned into errors (the unit tier keeps warnings as errors)."""
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.filterwarnings("default"))


# --- Production-shaped stores (stores.py): SeaweedFS S3, PostgreSQL, an MLflow tracking server ---


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stores.ObjectStore]:
    """One ``weed mini`` per session on an empty data folder; tests isolate by bucket or prefix."""
    try:
        store = stores.ObjectStore.create(tmp_path_factory.mktemp("seaweedfs"))
    except stores.StoreUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        store.service.start()
        yield store
    finally:
        store.service.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, object_store: stores.ObjectStore) -> Iterator[stores.Registry]:
    """The session's MLflow tracking server (PostgreSQL backend, artifacts in s3://kingmaker/mlartifacts).
    Tests that stop it use `private_registry` instead."""
    yield from _registry(tmp_path_factory.mktemp("registry"), object_store, "kingmaker")


@pytest.fixture
def private_registry(tmp_path: Path, object_store: stores.ObjectStore) -> Iterator[stores.Registry]:
    """A tracking server and PostgreSQL of this test's own, free to be stopped and restarted."""
    yield from _registry(tmp_path / "registry", object_store, f"private-{uuid.uuid4().hex[:12]}")


def _registry(run_dir: Path, store: stores.ObjectStore, bucket: str) -> Iterator[stores.Registry]:
    store.create_bucket(bucket)
    try:
        with stores.registry(run_dir, store, bucket) as reg:
            yield reg
    except stores.StoreUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def s3_prefix(object_store: stores.ObjectStore, request: pytest.FixtureRequest) -> str:
    """An ``s3://`` URL no other test writes under (in the session bucket ``kingmaker-data``)."""
    bucket = "kingmaker-data"
    if bucket not in {b["Name"] for b in object_store.client().list_buckets().get("Buckets", [])}:
        object_store.create_bucket(bucket)
    return f"s3://{bucket}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                            pytest.TestReport]:
    """A failed test that used a store shows the tail of each store's log."""
    report = yield
    if report.failed:
        services: dict[int, stores.Service] = {}
        for value in getattr(item, "funcargs", {}).values():
            for s in stores.services_of(value):
                services[id(s)] = s
        if services:
            report.sections.append(("store logs", "\n".join(s.log_tail() for s in services.values())))
    return report
