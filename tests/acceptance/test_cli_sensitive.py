"""Fields marked sensitive never reach the terminal (issue 23, item 3).

Runs of ``cardapp.payment`` (a card number marked `Sensitive` on the state
model, an API key named by the saga) are recorded in a SQLite file, one
completed, one rolled back by an error quoting both secrets, one needing
attention with compensation errors quoting them too. Every read command, with
and without ``--app``, run as a real subprocess, prints neither secret
anywhere and shows ``***`` in their place. A run recorded before its saga
marked anything is masked when ``--app`` brings the marks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sagakit import Engine, PermanentError, Saga, StepContext

from . import cardapp
from .cardapp import API_KEY, CARD
from .helpers import fails, ok, sagakit

APP = Path(__file__).parent
SECRETS = (CARD, API_KEY, CARD[-8:])


def clean(output: str) -> str:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} printed:\n{output}"
    return output


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sensitive") / "cards.db"
    with Engine(f"sqlite:///{path}") as engine:
        cardapp.record_payments(engine)
    return path


COMMANDS = [
    ("list",),
    ("list", "--status", "needs_attention"),
    ("show", "pay-ok"),
    ("show", "pay-bad"),
    ("show", "pay-stuck"),
    ("history", "pay-ok"),
    ("history", "pay-bad"),
    ("history", "pay-stuck"),
]


@pytest.mark.parametrize("with_app", [False, True], ids=["journal-only", "with-app"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_read_command_prints_a_sensitive_value(
    store: Path, tmp_path: Path, command: tuple[str, ...], with_app: bool
) -> None:
    app = ("--app", "cardapp") if with_app else ()
    done = sagakit(tmp_path, *command, "--db", f"sqlite:///{store}", *app, pythonpath=APP)
    clean(ok(done) + done.stderr)


def test_history_shows_the_masks_and_keeps_the_rest(store: Path, tmp_path: Path) -> None:
    out = clean(ok(sagakit(tmp_path, "history", "pay-bad", "--db", f"sqlite:///{store}")))
    assert '"card_number": "***"' in out
    assert '"cvv": "***"' in out, "a short value is masked under its key"
    assert '"order_id": "bad"' in out, "what is not sensitive is shown"
    assert 'result {"api_key": "***"}' in out
    assert "gateway refused card *** with key ***" in out


def test_list_and_show_mask_the_errors_they_print(store: Path, tmp_path: Path) -> None:
    listed = clean(ok(sagakit(tmp_path, "list", "--db", f"sqlite:///{store}")))
    assert "refused card ***" in listed
    shown = clean(ok(sagakit(tmp_path, "show", "pay-stuck", "--db", f"sqlite:///{store}")))
    assert "void refused for card *** (key ***)" in shown


def test_a_signal_refused_for_its_payload_does_not_quote_it(store: Path, tmp_path: Path) -> None:
    payload = f'{{"card_number": ["{CARD}"]}}'
    done = sagakit(
        tmp_path,
        *("signal", "pay-stuck", "topup", "--payload", payload),
        *("--db", f"sqlite:///{store}", "--app", "cardapp"),
        pythonpath=APP,
    )
    assert "***" in clean(fails(done) + done.stdout)


class Unmarked(BaseModel):
    order_id: str
    card_number: str
    cvv: str | None = None
    api_key: str | None = None


def test_a_run_recorded_before_the_marks_is_masked_with_the_app(tmp_path: Path) -> None:
    """Marks added to a saga later apply to its old runs when ``--app`` loads it."""
    before: Saga[Unmarked] = Saga("card-payment", state=Unmarked)

    @before.step
    def charge(state: Unmarked, ctx: StepContext) -> dict[str, Any]:
        raise PermanentError(f"gateway refused card {state.card_number}")

    db = f"sqlite:///{tmp_path / 'old.db'}"
    with Engine(db) as engine:
        engine.run(before, {"order_id": "o", "card_number": CARD}, run_id="old-1")
    raw = ok(sagakit(tmp_path, "history", "old-1", "--db", db))
    assert CARD in raw, "nothing marked it when it ran, and no --app says so now"
    for command in (("history", "old-1"), ("show", "old-1"), ("list",)):
        masked = sagakit(tmp_path, *command, "--db", db, "--app", "cardapp", pythonpath=APP)
        clean(ok(masked))


STEPS = """
def authorize(state, ctx):
    return {"api_key": "sk_live_51HxSECRETkey"}

def void(state, ctx):
    return None

def charge(state, ctx):
    raise RuntimeError(f"gateway refused card {state['card_number']}")
"""

SAGA = """\
saga: yaml-payment
sensitive: [card_number, api_key]
steps:
  - name: authorize
    function: paysteps.authorize
    compensate: paysteps.void
  - name: charge
    function: paysteps.charge
"""


def test_a_yaml_saga_names_its_sensitive_fields(tmp_path: Path) -> None:
    (tmp_path / "paysteps.py").write_text(STEPS)
    (tmp_path / "payment.yaml").write_text(SAGA)
    db = f"sqlite:///{tmp_path / 'yaml.db'}"
    ok(sagakit(tmp_path, "validate", "payment.yaml"))
    done = sagakit(
        tmp_path,
        *("run", "payment.yaml", "--run-id", "y-1", "--db", db),
        *("--input", f'{{"card_number": "{CARD}", "order": 7}}'),
    )
    out = clean(ok(done))
    assert '"card_number": "***"' in out, "the final state is masked"
    assert '"order": 7' in out
    history = clean(ok(sagakit(tmp_path, "history", "y-1", "--db", db)))
    assert "gateway refused card ***" in history
