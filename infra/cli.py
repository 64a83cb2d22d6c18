"""``chronik``: the command line for developers and operators."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

import psycopg
import structlog

from infra.devstack.stack import StackAlreadyRunning
from infra.logging import configure_logging, redact
from infra.settings import Settings, SettingsError, load_settings

__all__ = ["main"]

log = structlog.get_logger(__name__)


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from infra.db import PostgresTarget
    from infra.migrations import migrate

    target = PostgresTarget.from_url(settings.database_url_value())
    applied = migrate(target.conninfo())
    print(f"applied {len(applied)} migration(s) to {target.redacted()}")
    return 0


def _serve(settings: Settings) -> None:
    import uvicorn

    # By name, so infra does not import api: the app factory reads the same
    # settings from the environment.
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()


def _export_urls(settings: Settings) -> None:
    """Let the app and any child process find the servers the stack started."""
    os.environ["CHRONIK_DATABASE_URL"] = settings.database_url_value()
    if settings.nats_url is not None:
        os.environ["CHRONIK_NATS_URL"] = settings.nats_url


def _api(settings: Settings, _: argparse.Namespace) -> int:
    _serve(settings)
    return 0


def _dev(settings: Settings, _: argparse.Namespace) -> int:
    from infra.db import PostgresTarget
    from infra.devstack import DevStack
    from infra.migrations import migrate

    with DevStack(settings) as stack:
        settings = stack.start()
        _export_urls(settings)
        migrate(PostgresTarget.from_url(settings.database_url_value()).conninfo())
        print(f"Chronik is running at http://{settings.http_host}:{settings.http_port}", flush=True)
        print(f"API docs: http://{settings.http_host}:{settings.http_port}/docs", flush=True)
        # Ctrl-C is how a developer stops the stack: a clean exit, not an error.
        with contextlib.suppress(KeyboardInterrupt):
            _serve(settings)
    return 0


_COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "dev": ("start embedded servers (unless configured), migrate, serve", _dev),
    "api": ("serve the HTTP API against the configured servers", _api),
    "migrate": ("apply pending database migrations", _migrate),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronik", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in _COMMANDS.items():
        sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        # One line an operator can act on; a traceback would bury it.
        print(f"chronik: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    _, command = _COMMANDS[args.command]
    try:
        return command(settings, args)
    except KeyboardInterrupt:
        return 130
    except SettingsError as exc:
        print(f"chronik: {exc}", file=sys.stderr)
        return 2
    except StackAlreadyRunning as exc:
        print(f"chronik: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"chronik: cannot reach PostgreSQL: {redact(str(exc).strip())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
