"""Who holds a lease: an engine's owner name, and which earlier owners it may take over.

A lease's owner is a name the store compares and nothing more. This module
puts enough into it for a later process to recognise the runs an earlier
incarnation of itself was driving when it died, and take them back at once
instead of waiting for their leases to lapse:

- ``HOST:PID:NONCE:START:SCOPE``: a process (the default). ``START`` is when
  the process started (clock ticks since boot, from ``/proc/PID/stat``) and
  ``SCOPE`` names the kernel boot and the PID namespace the pid belongs to,
  so that on the same host (same scope) a process can prove another one gone:
  its pid is absent, a zombie, or belongs to a process started at another
  time (the pid was reused). A live process is never taken over.
- ``WORKER_ID/HOST:PID:NONCE:START:SCOPE``: a process that was given a worker
  id (``sagakit worker --worker-id``). The operator promises that no two live
  processes share an id, so a process starting under an id takes back at once
  the runs of every earlier owner with that id, on any host, except one that
  is on this host and provably alive.

Owners in any other form (an ``owner=`` given by hand, or the
``HOST:PID:NONCE`` of older versions) are never recognised: their runs are
taken over only once their leases lapse, as before. Proof needs Linux's
``/proc``; elsewhere ``START`` and ``SCOPE`` are ``0`` and only a worker id
recognises earlier incarnations.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from enum import Enum

from sagakit.errors import SagaError

__all__ = ["LeaseIdentity", "Takeover", "check_worker_id"]

# The owner names this module writes. A worker id holds no "/" (the separator)
# and no white space; hostnames hold neither, nor ":".
_OWNER = re.compile(
    r"(?:(?P<worker>[^/\s]{1,100})/)?"
    r"(?P<host>[^:/\s]+):(?P<pid>[0-9]{1,10}):(?P<nonce>[0-9a-f]{8}):"
    r"(?P<start>[0-9]{1,20}):(?P<scope>[0-9a-f]{1,16})"
)
_WORKER_ID = re.compile(r"[^/\s]{1,100}")

# /proc/PID/stat's fields after the command's closing parenthesis: the state
# is the first, the start time (in clock ticks since boot) the twentieth.
_STATE, _START_TIME = 0, 19


class Takeover(Enum):
    """Why an earlier owner's runs may be taken back at once."""

    SAME_WORKER_ID = "an earlier process under this worker id"
    PROCESS_GONE = "a process of this host that is gone"


def check_worker_id(worker_id: str) -> str:
    """Return ``worker_id`` if it may name a worker.

    Raises:
        SagaError: it is empty, longer than 100 characters, or holds a ``/``,
            white space or a control character.
    """
    # Printable too: the id is shown in logs, on the dashboard and by the CLI.
    if not _WORKER_ID.fullmatch(worker_id) or not worker_id.isprintable():
        raise SagaError(
            f"worker id {worker_id!r} must be 1 to 100 printable characters, "
            "without '/' or white space"
        )
    return worker_id


@dataclass(frozen=True, slots=True)
class _Mark:
    """Where and which process an owner name says it is."""

    worker: str | None
    host: str
    pid: int
    start: str
    scope: str


def _parse(owner: str) -> _Mark | None:
    found = _OWNER.fullmatch(owner)
    if found is None:
        return None
    return _Mark(found["worker"], found["host"], int(found["pid"]), found["start"], found["scope"])


def _stat(pid: int) -> tuple[str, str] | None:
    """The state and start time of process ``pid`` (from ``/proc``), or None if it has none.

    Raises:
        OSError: ``/proc`` could not be read for another reason than the
            process being absent, or it hides a process that exists.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        # Absent from /proc is not proof enough: with /proc mounted
        # ``hidepid=2`` (or systemd's ProtectProc=invisible) another user's
        # live process is hidden too. The kernel says whether it exists.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # no such process
        except PermissionError:
            pass  # it exists, as another user's: hidden from us
        raise OSError(f"process {pid} exists but /proc does not show it") from None
    # The command (in parentheses) may hold spaces and parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[_STATE], fields[_START_TIME]


def _this_scope() -> str:
    """The kernel boot and PID namespace of this process, hashed; ``0`` if unknown.

    Two processes with the same scope see each other's pids: a pid absent
    here is absent, not in another container's namespace, and a start time
    is comparable (the same boot).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "0"
    return hashlib.sha256(f"{boot_id} {namespace}".encode()).hexdigest()[:12]


class LeaseIdentity:
    """An engine's name in leases, and the judge of which other owners it may replace.

    Args:
        worker_id: The id the operator gave this worker (unique among live
            processes), or None for the process's own identity.

    Attributes:
        owner: The name written into the leases this engine takes.
        worker_id: The worker id, if one was given.
    """

    def __init__(self, worker_id: str | None = None) -> None:
        self.worker_id = None if worker_id is None else check_worker_id(worker_id)
        self.host = socket.gethostname().replace(":", "-").replace("/", "-") or "localhost"
        self.pid = os.getpid()
        self.scope = _this_scope()
        try:
            found = _stat(self.pid) if self.scope != "0" else None
        except OSError:
            found = None
        if found is None:  # no proof possible: an unknown scope matches nothing
            self.scope = "0"
        self.start = "0" if found is None else found[1]
        # Eight random hex digits, as uuid4().hex[:8] gave (uuid imports platform).
        tag = os.urandom(4).hex()
        process = f"{self.host}:{self.pid}:{tag}:{self.start}:{self.scope}"
        self.owner = process if self.worker_id is None else f"{self.worker_id}/{process}"
        self._gone: set[str] = set()  # owners proven gone: a dead process stays dead

    @property
    def proves_gone(self) -> bool:
        """Whether this process can prove another of its host gone (Linux's ``/proc``)."""
        return self.scope != "0"

    def takeover(self, owner: str) -> Takeover | None:
        """Whether the runs ``owner`` holds may be taken at once, and why.

        Returns:
            `Takeover.PROCESS_GONE` if ``owner`` is a process of this host and
            scope that is provably gone (whatever its worker id);
            `Takeover.SAME_WORKER_ID` if it is another process under this
            worker id that is not on this host (so taken on the operator's
            promise that ids are unique); None
            otherwise (this engine itself, another live process, another
            host's process, or a name this module did not write).
        """
        if owner == self.owner:
            return None
        mark = _parse(owner)
        if mark is None:
            return None
        here = mark.host == self.host and mark.scope == self.scope and self.scope != "0"
        if here and self._gone_here(owner, mark):
            return Takeover.PROCESS_GONE
        if here or self.worker_id is None or mark.worker != self.worker_id:
            return None
        return Takeover.SAME_WORKER_ID

    def alive_here(self, owner: str) -> bool:
        """Whether ``owner`` is a process of this host and scope that may still be alive."""
        mark = _parse(owner)
        if mark is None or mark.host != self.host or mark.scope != self.scope:
            return False
        return self.scope != "0" and not self._gone_here(owner, mark)

    def _gone_here(self, owner: str, mark: _Mark) -> bool:
        """Whether the process ``mark`` names, on this host and scope, is gone."""
        if owner in self._gone:
            return True
        if mark.pid == self.pid:
            gone = mark.start != self.start  # another process once had this pid
        else:
            try:
                found = _stat(mark.pid)
            except OSError:  # unreadable: nothing is proven
                return False
            # A zombie has exited: it holds its pid only until it is reaped.
            gone = found is None or found[0] in ("Z", "X") or found[1] != mark.start
        if gone:
            self._gone.add(owner)
        return gone
