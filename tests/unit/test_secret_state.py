"""A state model with a pydantic secret is refused when the saga is defined.

pydantic writes a `SecretStr` as ``"**********"``; stored so, every later step
and compensation would see the mask instead of the secret.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, Secret, SecretBytes, SecretStr

from sagakit import DefinitionError, Saga
from sagakit.yamlfile import DefinitionFileError, load_yaml


class Card(BaseModel):
    token: SecretStr | None = None


class Order(BaseModel):
    order_id: str
    api_key: SecretStr


class Wallet(BaseModel):
    cards: list[Card] = []


class Keys(BaseModel):
    raw: SecretBytes = SecretBytes(b"")
    pin: Annotated[Secret[int], Field(default=Secret(0))]


class Tree(BaseModel):
    name: str = "root"
    children: list[Tree] = []


@pytest.mark.parametrize(
    ("model", "field"),
    [(Order, "Order.api_key"), (Wallet, "Wallet.cards.token"), (Keys, "Keys.raw")],
)
def test_a_state_model_holding_a_secret_is_refused(model: type[BaseModel], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        Saga("pay", state=model)
    message = str(caught.value)
    assert f"saga 'pay': state field {field} is a pydantic secret" in message
    assert "'**********'" in message
    assert "keep the secret outside the state" in message


def test_a_state_model_without_secrets_is_taken_even_when_it_nests_itself() -> None:
    saga: Saga[Tree] = Saga("tree", state=Tree)
    assert saga.state_type is Tree


def test_a_yaml_definition_naming_such_a_model_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "secretmodels.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel, SecretStr

            class Order(BaseModel):
                api_key: SecretStr

            def charge(state, ctx):
                return None
            """
        )
    )
    (tmp_path / "saga.yaml").write_text(
        textwrap.dedent(
            """
            saga: pay
            state: secretmodels.Order
            steps:
              - name: charge
                function: secretmodels.charge
            """
        )
    )
    with pytest.raises(DefinitionFileError) as caught:
        load_yaml(tmp_path / "saga.yaml")
    assert "state field Order.api_key is a pydantic secret" in str(caught.value)
