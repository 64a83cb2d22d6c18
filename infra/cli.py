"""``chronik``: the command line for developers and operators."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO
from uuid import UUID

import psycopg
import pydantic
import structlog
from eventsourcing.persistence import OperationalError as StoreOperationalError

from aggregates.base import DomainError
from infra.devstack.stack import StackAlreadyRunning
from infra.logging import configure_logging, redact, settings_secrets
from infra.memory import bound_malloc, settle_heap
from infra.operations import OperationError
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
    # uvicorn.run, not Server.run: with http_workers > 1 it forks that many
    # processes sharing the socket, each building its own app and pools.
    uvicorn.run(
        "api.app:create_server_app",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        workers=settings.http_workers,
        log_config=None,
        access_log=False,
        lifespan="on",
        # A backstop: open event streams are ended on SIGINT/SIGTERM by the app.
        timeout_graceful_shutdown=10,
    )


def _bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    created = _create_team(settings, args.team, args.owner, args.plan)
    print(f"team: {created[0]}")
    print(f"owner key: {created[1]}")
    return 0


def _create_team(settings: Settings, name: str, owner: str, plan: str) -> tuple[str, str]:
    from commands.models import CreateTeam
    from commands.teams import create_team
    from infra.bootstrap import open_services

    command = CreateTeam(name=name, plan=plan, owner_email=owner)
    services = open_services(settings)
    try:
        created = create_team(services.event_store, command)
        return created.result.data["id"], created.owner_key
    finally:
        services.close()


def _export_urls(settings: Settings) -> None:
    """Let the app and any child process find the servers the stack started."""
    os.environ["CHRONIK_DATABASE_URL"] = settings.database_url_value()
    if settings.nats_url is not None:
        os.environ["CHRONIK_NATS_URL"] = settings.nats_url


def _api(settings: Settings, _: argparse.Namespace) -> int:
    _serve(settings)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.operations import WORKER_ROLES, run_worker

    settle_heap()
    run_worker(settings, roles=tuple(args.only or WORKER_ROLES))
    return 0


def _projections(settings: Settings, args: argparse.Namespace) -> int:
    from infra import operations

    match args.action:
        case "status":
            print("\n".join(operations.status_lines(settings)))
        case "retry":
            print(operations.retry(settings, args.name))
        case "skip":
            print(operations.skip(settings, args.name, args.position, args.reason))
        case "rebuild":
            settle_heap()
            print(operations.rebuild(settings, args.name, args.batch_size))
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from infra.operations import replay

    settle_heap()
    replay(settings, args.batch_size, say=lambda line: print(line, flush=True))
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from infra.export import export

    def open_output() -> contextlib.AbstractContextManager[BinaryIO]:
        if args.output in (None, "-"):
            # Left open: stdout is the caller's.
            return contextlib.nullcontext(sys.stdout.buffer)
        try:
            return open(args.output, "wb")
        except OSError as exc:
            raise OperationError(f"cannot write {args.output}: {exc.strerror}") from None

    try:
        done = export(settings, open_output, after=args.after, team=args.team)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do,
        # and keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    print(
        f"exported {done.exported} event(s) up to position {done.upto}; "
        f"{done.read} read in {done.seconds:.1f} s ({done.rate:,.0f} events/s)",
        file=sys.stderr,
    )
    return 0


def _position(text: str) -> int:
    """argparse type: a position in the log (0 or more)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a position (0 or more), not {text!r}")
    return int(text)


def _batch_size(text: str) -> int:
    """argparse type: events per transaction (1 or more)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text!r}")
    return int(text)


def _sync(settings: Settings, args: argparse.Namespace) -> int:
    from infra.jobs import compact_sync_once

    remaining = compact_sync_once(settings)
    if remaining is None:
        print("another process is compacting; nothing done")
    else:
        print(f"sync compacted: {remaining} change rows remain")
    return 0


def _with_dev_audit_keys(settings: Settings) -> Settings:
    """Unless keys are configured, the demo signs audit checkpoints with a key
    kept in its data folder (the API reads it from the environment)."""
    from infra.devstack.audit_key import dev_audit_keys

    if settings.audit_signing_keys:
        return settings
    keys = dev_audit_keys(settings.data_dir)
    os.environ["CHRONIK_AUDIT_SIGNING_KEYS"] = keys
    parsed = load_settings(audit_signing_keys=keys).audit_signing_keys
    return settings.model_copy(update={"audit_signing_keys": parsed})


def _with_dev_operator_token(settings: Settings) -> Settings:
    """Unless one is configured, the demo's operator token (to create teams over
    HTTP) is kept in its data folder; the API reads it from the environment."""
    from pydantic import SecretStr

    from infra.devstack.dev_env import dev_operator_token

    if settings.operator_token is not None:
        return settings
    token = dev_operator_token(settings.data_dir)
    os.environ["CHRONIK_OPERATOR_TOKEN"] = token
    return settings.model_copy(update={"operator_token": SecretStr(token)})


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from infra.audit_commands import head_document, verify_log

    if args.action == "head":
        sys.stdout.buffer.write(head_document(settings) + b"\n")
        return 0
    report, lines = verify_log(settings, args.from_, args.to, show_progress=sys.stderr.isatty())
    print("\n".join(lines))
    return 0 if report.ok else 1


def _dev(settings: Settings, _: argparse.Namespace) -> int:
    import threading

    from infra.db import PostgresTarget
    from infra.devstack import DevStack
    from infra.devstack.dev_env import write_dev_env
    from infra.migrations import migrate
    from infra.operations import run_worker

    with DevStack(settings) as stack:
        settings = _with_dev_operator_token(_with_dev_audit_keys(stack.start()))
        _export_urls(settings)
        migrate(PostgresTarget.from_url(settings.database_url_value()).conninfo())
        team_id, owner_key = _create_team(settings, "Demo team", "owner@example.com", "team")
        base = f"http://{settings.http_host}:{settings.http_port}"
        assert settings.operator_token is not None
        env_file = write_dev_env(
            settings.data_dir,
            {
                "API": base,
                "OPERATOR_TOKEN": settings.operator_token.get_secret_value(),
                "DEMO_TEAM": team_id,
                "DEMO_KEY": owner_key,
            },
        )
        print(f"Chronik is running at {base}", flush=True)
        print(f"demo team: {base}/v1/teams/{team_id}", flush=True)
        print(f"owner key: {owner_key}", flush=True)
        print(f"operator token: {settings.operator_token.get_secret_value()}", flush=True)
        print(f"for another shell: . {env_file}", flush=True)
        print(f"API docs: http://{settings.http_host}:{settings.http_port}/docs", flush=True)
        stop_worker = threading.Event()
        worker = threading.Thread(target=run_worker, args=(settings, stop_worker), name="worker")
        worker.start()
        try:
            # Ctrl-C is how a developer stops the stack: a clean exit, not an error.
            with contextlib.suppress(KeyboardInterrupt):
                _serve(settings)
        finally:
            stop_worker.set()
            worker.join(timeout=15)
    return 0


_COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "dev": ("start embedded servers (unless configured), migrate, serve and run workers", _dev),
    "api": ("serve the HTTP API against the configured servers", _api),
    "worker": ("run the projections and the fan-out until SIGINT/SIGTERM", _worker),
    "projections": ("projection status, retry, skip and rebuild", _projections),
    "export": ("write the log's public events as NDJSON, read from the event store", _export),
    "replay": (
        "rebuild every projection from the log beside the live one (reads keep working)",
        _replay,
    ),
    "audit": ("verify the audit hash chain against the log, or print its head", _audit),
    "sync": ("sync maintenance: compact purges tombstones past the retention", _sync),
    "migrate": ("apply pending database migrations", _migrate),
    "bootstrap": ("create a team and print its owner key", _bootstrap),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronik", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {name: sub.add_parser(name, help=h) for name, (h, _) in _COMMANDS.items()}
    parsers["bootstrap"].add_argument("--team", required=True, help="the team's name")
    parsers["bootstrap"].add_argument("--owner", required=True, help="the owner's email")
    parsers["bootstrap"].add_argument("--plan", default="team", help="free, team or enterprise")
    parsers["worker"].add_argument(
        "--only",
        action="append",
        choices=("projections", "fanout", "scheduler"),
        help="run only this part (repeatable); default: all",
    )
    actions = parsers["projections"].add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="position, lag and stalls of every projection")
    retry = actions.add_parser("retry", help="resume a stalled projection at the failed event")
    retry.add_argument("name")
    skip = actions.add_parser("skip", help="mark the event a projection stalled at as applied")
    skip.add_argument("name")
    skip.add_argument("--position", type=int, required=True, help="where it stalled")
    skip.add_argument("--reason", default="", help="recorded with the skip")
    rebuild = actions.add_parser("rebuild", help="rebuild beside the live tables, then switch")
    rebuild.add_argument("name")
    rebuild.add_argument("--batch-size", type=_batch_size, default=None)
    export = parsers["export"]
    export.description = (
        "Write the public form of every event after --after (the documents /events, NATS "
        "and webhooks carry) as NDJSON, in position order, up to the newest position when "
        "it starts. Read from the event store, not the read tables, so projection lag does "
        "not matter; private entries' events are included (an operator's tool). Memory "
        "stays at one page of events; progress goes to stderr."
    )
    export.add_argument(
        "--after", type=_position, default=0, metavar="P", help="start after this position"
    )
    export.add_argument("--team", type=UUID, metavar="TEAM_ID", help="only this team's events")
    export.add_argument("--output", metavar="FILE", help="where to write (default: stdout)")
    parsers["replay"].description = (
        "Rebuild every projection from the event log, one after another. Each new "
        "generation is built beside the live one, which keeps serving reads, and readers "
        "are switched to it once it has caught up. Projections that are not replayable "
        "(the tamper-evident audit ledger) are skipped, and the output says so."
    )
    parsers["replay"].add_argument(
        "--batch-size", type=_batch_size, default=None, help="events applied per transaction"
    )
    audit_actions = parsers["audit"].add_subparsers(dest="action", required=True)
    verify = audit_actions.add_parser(
        "verify",
        help="recompute the chain from the stored events; exit 1 at the first bad position",
    )
    verify.add_argument(
        "--from", dest="from_", type=_position, default=0, metavar="P", help="first position"
    )
    verify.add_argument("--to", type=_position, default=None, metavar="P", help="last position")
    audit_actions.add_parser("head", help="the newest link and signed checkpoint, as JSON")
    sync_actions = parsers["sync"].add_subparsers(dest="action", required=True)
    sync_actions.add_parser("compact", help="purge sync tombstones older than the retention")
    return parser


def _failure(exc: Exception) -> tuple[int, str] | None:
    """The exit code and the one line to print for a failure we expect."""
    match exc:
        case SettingsError():
            return 2, str(exc)
        case pydantic.ValidationError():
            first = exc.errors()[0]
            return 2, f"{first['loc'][0]}: {first['msg']}"
        case StackAlreadyRunning() | OperationError():
            return 1, str(exc)
        case DomainError():
            return 1, exc.message
        # The library's own (its pool wraps psycopg's): the same to an operator.
        case psycopg.OperationalError() | StoreOperationalError():
            return 1, f"cannot reach PostgreSQL: {redact(str(exc).strip())}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    bound_malloc()  # before anything allocates much
    args = _parser().parse_args(argv)
    _, command = _COMMANDS[args.command]
    try:
        settings = load_settings()
        configure_logging(
            settings.log_level, settings.log_format, secrets=settings_secrets(settings)
        )
        return command(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        # One line an operator can act on; a traceback would bury it.
        print(f"chronik: {failure[1]}", file=sys.stderr)
        return failure[0]


if __name__ == "__main__":
    sys.exit(main())
