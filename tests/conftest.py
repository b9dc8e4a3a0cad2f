import pytest


@pytest.fixture
def store_path(tmp_path):
    return str(tmp_path / "results.db")
