"""Choosing a store: `open_store` picks the backend by the URL's scheme and
refuses what it does not know, without connecting to anything."""

from __future__ import annotations

import pytest

from sagakit.errors import StoreError
from sagakit.store import open_store


@pytest.mark.parametrize("url", ["postgresql://db/sagas", "postgres://u@db/sagas"])
def test_postgresql_urls_make_a_postgresql_store_without_connecting(url: str) -> None:
    store = open_store(url)
    assert type(store).__name__ == "PostgresStore"


def test_unknown_schemes_and_options_are_refused() -> None:
    with pytest.raises(StoreError, match=r"supported forms: memory://.*sqlite:///"):
        open_store("mysql://db/x")
    with pytest.raises(StoreError, match="no options"):
        open_store("memory://", synchronous="full")
    with pytest.raises(StoreError, match="unknown option"):
        open_store("sqlite:///x.db", colour="red")
    with pytest.raises(StoreError, match="synchronous"):
        open_store("sqlite:///x.db?synchronous=sometimes")
    with pytest.raises(StoreError, match="unknown option"):
        open_store("sqlite:///x.db?journal=off")
    with pytest.raises(StoreError, match="unknown option for the PostgreSQL store"):
        open_store("postgresql://db/x", colour="red")
