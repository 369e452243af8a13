"""The fork server the daemon starts its helper processes from (evaluation workers, the
process validating the rules): a clean process, so that none inherits a lock or a thread of
the daemon, with the modules they run imported once.

The fork server, and multiprocessing's resource tracker it hands its processes, are started
with only the variables Python and the locale need
(:func:`rulekit.runtime.confined.base_environment`), given to them explicitly (the daemon's
own environment is never changed, not even for a moment: another thread reading it then
would see it without its variables, or lose one it set): a process keeps the environment it
was started with in its memory (``/proc/<pid>/environ``) whatever it sets afterwards, and
every process forked from the server would hold the daemon's secrets there. Each helper is
given the environment it needs when it starts.

Should the fork server die (killed, out of memory), the next process start starts a new one:
one, whatever the number of threads starting processes at that moment (they wait for it). A
start the dead server had not forked yet is asked of the new one; one it had forked but not
told about never runs (its data is never sent), so no start is lost and none happens twice.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import connection, reduction, spawn, util
from multiprocessing.context import ForkServerContext, ForkServerProcess, set_spawning_popen
from multiprocessing.forkserver import MAXFDS_TO_SEND, read_signed
from multiprocessing.popen_forkserver import Popen as ForkServerPopen
from typing import Any

from rulekit.runtime.confined import base_environment

PRELOAD = ["rulekit.runtime.worker", "rulekit.snapshot", "rulekit.runtime.known"]
"""The modules the fork server imports once, for every process it forks."""
RESTART_WAIT = 10.0
"""Seconds a process start waits for a fork server that died to be replaced."""


class _Spawned:
    """A process this module started (the fork server, the resource tracker), reaped by it."""

    def __init__(self, args: list[str], fds: list[int]) -> None:
        process = subprocess.Popen(
            args,
            executable=args[0],
            pass_fds=fds,
            env=base_environment(os.environ),
            close_fds=True,
        )
        self.pid = process.pid
        # it runs as long as the daemon (it ends when the daemon does) and is reaped here:
        # the Popen is told not to wait for it, nor to warn that it outlives it
        process.returncode = 0

    def running(self) -> bool:
        """Whether it runs (reaped when it ended)."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped before
            return False
        return pid == 0


class ForkServer:
    """The daemon's fork server: started with :func:`base_environment`, restarted when it
    died, each request to it (:meth:`start`) made once."""

    def __init__(self, preload: list[str]) -> None:
        self.preload = preload
        self._lock = threading.Lock()
        """Held while the server is (re)started and while a request is handed to it: a request
        never meets a server being replaced."""
        self._server: _Spawned | None = None
        self._address: Any = None
        self._alive_w: int | None = None
        self._tracker: _Spawned | None = None
        self._tracker_w: int | None = None

    def start(self, fds: list[int]) -> tuple[int, int, int]:
        """Have a new process forked, handed ``fds``: its status pipe (its pid and exit code
        come through it), its pid, and the pipe to write its data to. Raises
        :class:`OSError` when no server can be started or answers in time."""
        deadline = time.monotonic() + RESTART_WAIT
        while True:
            try:
                status, data = self._request(fds)
            except OSError:  # the server died before it took the request: nothing forked
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            try:
                pid = read_signed(status)
            except (OSError, EOFError):
                # it died before it said the pid: a process it forked reads its data from
                # ``data``, closed here unwritten, and ends without running anything
                os.close(status)
                os.close(data)
                if time.monotonic() > deadline:
                    raise OSError("the fork server died while forking") from None
                continue
            return status, pid, data

    def _request(self, fds: list[int]) -> tuple[int, int]:
        if len(fds) + 4 >= MAXFDS_TO_SEND:
            raise ValueError("too many fds")
        with self._lock:
            self._ensure_running()
            assert self._alive_w is not None and self._tracker_w is not None
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(self._address)
                parent_r, child_w = os.pipe()
                child_r, parent_w = os.pipe()
                try:
                    reduction.sendfds(
                        client, [child_r, child_w, self._alive_w, self._tracker_w, *fds]
                    )
                except BaseException:
                    os.close(parent_r)
                    os.close(parent_w)
                    raise
                finally:
                    os.close(child_r)
                    os.close(child_w)
                return parent_r, parent_w

    def _ensure_running(self) -> None:
        self._ensure_tracker()
        if self._server is not None:
            if self._server.running():
                return
            assert self._alive_w is not None
            os.close(self._alive_w)
            self._server = self._address = self._alive_w = None
        data: dict[str, Any] = {}
        if self.preload:
            wanted = {"main_path", "sys_path"}
            data = {k: v for k, v in spawn.get_preparation_data("ignore").items() if k in wanted}
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            # every process it forks holds the write end of "alive": the server ends when
            # the daemon and they all have
            alive_r, alive_w = os.pipe()
            try:
                command = (
                    "from multiprocessing.forkserver import main; "
                    f"main({listener.fileno()}, {alive_r}, {self.preload!r}, **{data!r})"
                )
                self._server = _Spawned(_python("-c", command), [listener.fileno(), alive_r])
            except BaseException:
                os.close(alive_w)
                raise
            finally:
                os.close(alive_r)
            self._address, self._alive_w = address, alive_w

    def _ensure_tracker(self) -> None:
        """multiprocessing's resource tracker for the processes forked (it cleans up what a
        process that died left: semaphores, shared memory), started as the server is."""
        if self._tracker is not None and self._tracker.running():
            return
        if self._tracker_w is not None:
            os.close(self._tracker_w)
            self._tracker = self._tracker_w = None
        fds = []
        with contextlib.suppress(AttributeError, ValueError, OSError):
            fds.append(sys.stderr.fileno())
        read_end, write_end = os.pipe()
        try:
            command = f"from multiprocessing.resource_tracker import main; main({read_end})"
            # (as multiprocessing starts it: SIGINT and SIGTERM blocked until it ignores them)
            blocked = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            try:
                self._tracker = _Spawned(_python("-c", command), [*fds, read_end])
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._tracker_w = write_end


def _python(*args: str) -> list[str]:
    return [spawn.get_executable(), *util._args_from_interpreter_flags(), *args]  # type: ignore[attr-defined]


class _Popen(ForkServerPopen):
    """A process started from :data:`_SERVER` (multiprocessing's forkserver ``Popen``, its
    launch through it)."""

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        # the pid first, then the data: a process a dying server forked without saying so
        # never gets its data, so never runs (its start is asked again)
        self.sentinel, self.pid, data = _SERVER.start(self._fds)  # type: ignore[attr-defined]
        # a duplicate of the data pipe's write end: the child's sentinel of its parent
        parent_w = os.dup(data)
        self.finalizer = util.Finalize(
            self,
            util.close_fds,  # type: ignore[attr-defined]
            (parent_w, self.sentinel),
        )
        with open(data, "wb", closefd=True) as pipe:
            pipe.write(buf.getbuffer())


class _Process(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


class _Context(ForkServerContext):
    Process = _Process


_SERVER = ForkServer(PRELOAD)
_CONTEXT = _Context()


def fork_server() -> ForkServerContext:
    """The multiprocessing context of the fork server (started with the first process)."""
    return _CONTEXT
