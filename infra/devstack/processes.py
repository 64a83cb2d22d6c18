"""Child server processes that cannot outlive us."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["ServerProcess", "free_port", "wait_until"]

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def _die_with_parent(sig: int) -> Callable[[], None]:
    # Runs in the child after fork (and after any uid change, which would clear
    # the setting): the kernel signals the child when our process dies, even by
    # SIGKILL, so a crashed parent never leaves a server behind.
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        # Ctrl-C in the terminal goes to the foreground group; we stop children
        # ourselves, in order, so they must not also receive it.
        os.setpgid(0, 0)

    return preexec


class ServerProcess:
    """A long-running server we started, stopped with its own graceful signal."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        stop_signal: int,
        user: int | None = None,
        group: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - argv built from our own paths
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
            env=env,
            preexec_fn=_die_with_parent(stop_signal),  # noqa: PLW1509 - needed for PDEATHSIG
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.running():
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
