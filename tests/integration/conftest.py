import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests drive real third-party servers and stores: their deprecation warnings are
    reported, not turned into errors (the unit tier keeps warnings as errors)."""
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.filterwarnings("default"))


from .bentos_support import serving_home  # noqa: E402,F401  (a session fixture for every integration test)
