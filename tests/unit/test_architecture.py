"""Dependencies point inward: api -> commands -> aggregates; infra is wired in."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = {"aggregates", "commands", "projections", "api", "infra"}

# The OpenTelemetry API (never its SDK or exporters) is a no-op until a process
# installs a provider (infra.tracing): commands and runners open spans with it.
TRACING_API = "opentelemetry.trace"
ALLOWED = {
    "aggregates": {"aggregates", "eventsourcing.domain", "pydantic"},
    "commands": {"aggregates", "commands", "eventsourcing", "pydantic", "orjson", TRACING_API},
    # Runners are long-lived workers: they log, with the same structured logger as infra.
    "projections": {
        "aggregates",
        "projections",
        "psycopg",
        "eventsourcing",
        "pydantic",
        "orjson",
        "structlog",
        TRACING_API,
    },
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _allowed(module: str, allowed: set[str]) -> bool:
    top = module.split(".", maxsplit=1)[0]
    if top in sys.stdlib_module_names and top not in OUR_PACKAGES:
        return True
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_inner_packages_import_only_what_they_may(package: str) -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / package).rglob("*.py")
        for module in _imports(path)
        if not _allowed(module, ALLOWED[package])
    }
    assert not offenders


def test_infra_never_imports_api() -> None:
    offenders = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "infra").rglob("*.py")
        if any(m == "api" or m.startswith("api.") for m in _imports(path))
    }
    assert not offenders


def test_aggregates_do_no_io() -> None:
    io_modules = {
        "socket",
        "subprocess",
        "psycopg",
        "httpx",
        "aiohttp",
        "nats",
        "os",
        "pathlib",
        "random",
    }
    offenders = {
        f"{path.name}: {module}"
        for path in (ROOT / "aggregates").rglob("*.py")
        for module in _imports(path)
        if module.split(".")[0] in io_modules
    }
    assert not offenders
