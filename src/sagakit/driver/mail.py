"""The driver's mail: cancel requests and signals posted by other processes.

The driver reads a run's mail when the store says some waits, journals what
each message does (a cancel taken or refused, a signal merged into the state
or answering a pause, through the step's signal handler), and has the commit
that journals it consume it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sagakit import core
from sagakit.control import Next, Pause, Signal
from sagakit.driver.calls import ask
from sagakit.errors import StateError
from sagakit.journal import JSON, ErrorInfo, EventKind, Phase
from sagakit.store import Mail

if TYPE_CHECKING:
    from sagakit.driver.driver import Driver


async def withdrawn(driver: Driver, calls: Sequence[core.Invoke]) -> bool:
    """Read mail that came with the write-ahead commit, before making the calls.

    A cancel posted while the previous step ran is seen here, when the
    next step is journaled but not yet called: that call is withdrawn, so
    the run stops after the step that was under way, not one step later.
    """
    await read_mail(driver)
    if driver.progress.cancel is None:
        return False
    for call in calls:
        driver.append(EventKind.STEP_WITHDRAWN, step=call.step, attempt=call.attempt)
    return True


async def read_mail(driver: Driver) -> None:
    driver.mail_waiting = False
    for mail in await driver.store.mail(driver.run_id):
        if mail.id in driver._mail_read:
            continue
        driver._mail_read.append(mail.id)  # consumed by the commit that journals it
        if mail.kind == "cancel":
            _take_cancel(driver, mail)
        elif mail.kind == "signal":
            await _take_signal(driver, mail)
        else:
            driver.log.error("run %s: dropping mail of unknown kind %r", driver.run_id, mail.kind)


def _take_cancel(driver: Driver, mail: Mail) -> None:
    reason = mail.data.get("reason")
    force = bool(mail.data.get("force"))
    refusal = core.cancel_refusal(driver.plan, driver.progress, force=force)
    if refusal is not None:
        driver.log.warning("run %s: cancel refused: %s", driver.run_id, refusal)
        driver.append(EventKind.CANCEL_REFUSED, data={"reason": reason, "why": refusal})
        return
    driver.log.warning("run %s: cancel requested (%s)", driver.run_id, reason or "no reason given")
    driver.append(EventKind.CANCEL_REQUESTED, data={"reason": reason, "force": force})


async def _take_signal(driver: Driver, mail: Mail) -> None:
    name = str(mail.data.get("name"))
    payload = mail.data.get("payload") or {}
    data: JSON = {"name": name, "payload": payload}
    progress = driver.progress
    if progress.status.terminal:
        data["ignored"] = f"the run had already finished as {progress.status.value}"
        driver.append(EventKind.SIGNAL_RECEIVED, data=data)
        return
    try:
        driver.saga.dump_state({**progress.state, **payload})
    except StateError as exc:
        data["ignored"] = f"its payload does not fit the state: {exc}"
        driver.log.error("run %s: signal %r ignored: %s", driver.run_id, name, exc)
        driver.append(EventKind.SIGNAL_RECEIVED, data=data)
        return
    paused = progress.paused
    step = paused.get("step") if paused else None
    options = paused.get("options") if paused else None
    answers = (
        paused is not None
        and isinstance(step, str)
        and paused.get("waiting_for") is None
        and (not options or name in options)
    )
    if not answers:  # merged into the state, kept for a step that waits for it
        driver.append(EventKind.SIGNAL_RECEIVED, data=data)
        return
    assert isinstance(step, str)
    handler = driver.saga[step].signal_handler
    call = core.Invoke(Phase.ACTION, step, progress.attempts(Phase.ACTION, step).started)
    answer: Next | Pause | None = Next.RETRY
    if handler is not None:
        # The handler sees the state with the payload merged, as the step will.
        saved = progress.state
        progress.state = {**saved, **payload}
        try:
            answer = await ask(driver, handler, call, Signal(name, payload, driver.clock()))
        finally:
            progress.state = saved
    if isinstance(answer, Pause):
        driver.append(EventKind.SIGNAL_RECEIVED, data=data)
        driver.append(EventKind.PAUSED, step=step, data=answer.to_json())
        return
    data["decision"] = (answer or Next.RETRY).value
    if answer is Next.COMPENSATE and progress.attempts(Phase.ACTION, step).error is None:
        data["error"] = ErrorInfo(
            type="sagakit.Declined",
            message=f"the signal {name!r} answered the pause with compensate",
            step=step,
        ).to_json()
    driver.log.info("run %s: signal %r: %s step %r", driver.run_id, name, data["decision"], step)
    driver.append(EventKind.SIGNAL_RECEIVED, data=data)
