"""The settings reference in docs/operations.md, generated from ``Settings``.

``python -m infra.settings_reference`` rewrites the block between the two
marker comments; ``--check`` only says whether it is current (exit 1 if not).
The descriptions live beside the fields (``Field(description=...)``), so the
doc cannot drift from the code: a unit test compares the two.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from infra.settings import Settings

__all__ = ["BEGIN", "DOC", "END", "REGENERATE", "render", "rewrite"]

BEGIN: Final = "<!-- settings-reference:begin (generated from infra/settings.py) -->"
END: Final = "<!-- settings-reference:end -->"
DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
REGENERATE: Final = ".venv/bin/python -m infra.settings_reference"
_REDACTED: Final = "`**********`"
_SCALARS: Final[dict[Any, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret",
    IPv4Network: "CIDR",
    IPv6Network: "CIDR",
    datetime: "RFC 3339 time",
}


def _type_name(annotation: Any) -> str:  # noqa: PLR0911 - one return per kind
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        names = list(dict.fromkeys(_type_name(a) for a in args if a is not type(None)))
        optional = ", optional" if type(None) in args else ""
        return " or ".join(names) + optional
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"comma-separated {_type_name(args[0])}s"
    if origin is dict:
        return f"comma-separated `id:{_type_name(args[1])}` pairs"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and annotation.__name__ == "AwareDatetime":
        return "RFC 3339 time"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    low = high = ""
    for item in field.metadata:
        match item:
            case annotated_types.Ge(ge=value):
                low = f"{value} ≤ "
            case annotated_types.Gt(gt=value):
                low = f"{value} < "
            case annotated_types.Le(le=value):
                high = f" ≤ {value}"
            case annotated_types.Lt(lt=value):
                high = f" < {value}"
    if low and high:
        return f"{low}x{high}"
    if low:  # "x ≥ 1" reads better than "1 ≤ x"
        bound, sign = low.split()
        return f"x {'≥' if sign == '≤' else '>'} {bound}"
    return f"x{high}" if high else ""


def _pattern(field: FieldInfo) -> str:
    for item in field.metadata:
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            return pattern
    return ""


def _value(value: Any) -> str:  # noqa: PLR0911 - one return per kind
    """How the default would be written in the environment."""
    match value:
        case None:
            return "unset"
        case SecretStr():
            return _REDACTED
        case bool():
            return f"`{str(value).lower()}`"
        case float() if value.is_integer():
            return f"`{int(value)}`"
        case list() | tuple():
            return f"`{','.join(_value(v).strip('`') for v in value)}`" if value else "none"
        case dict():
            if not value:
                return "none"
            if any(isinstance(v, SecretStr) for v in value.values()):
                return _REDACTED
            return f"`{','.join(f'{k}:{v}' for k, v in value.items())}`"
        case enum.Enum():
            return f"`{value.value}`"
    return f"`{value}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())  # type: ignore[call-arg]
    return _value(field.default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def missing_descriptions() -> list[str]:
    return [name for name, field in Settings.model_fields.items() if not field.description]


def render() -> str:
    """The block between the markers, markers included."""
    prefix = Settings.model_config.get("env_prefix", "")
    lines = [
        BEGIN,
        f"<!-- Do not edit by hand: `{REGENERATE}` rewrites this table. -->",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        kind = _type_name(field.annotation)
        extras = [e for e in (_bounds(field), _pattern(field) and f"`{_pattern(field)}`") if e]
        if extras:
            kind += f" ({', '.join(extras)})"
        description = field.description or "(no description)"
        lines.append(
            f"| `{prefix}{name.upper()}` | {_cell(kind)} | {_cell(_default(field))} "
            f"| {_cell(description)} |"
        )
    lines.append(END)
    return "\n".join(lines)


def rewrite(text: str) -> str:
    """``text`` with its block replaced by a fresh one."""
    start = text.find(BEGIN)
    stop = text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing or out of order")
    return text[:start] + render() + text[stop + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.settings_reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is not current")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to rewrite")
    args = parser.parse_args(argv)
    missing = missing_descriptions()
    if missing:
        print(f"settings without a description=: {', '.join(missing)}", file=sys.stderr)
        return 1
    text = args.doc.read_text()
    fresh = rewrite(text)
    if args.check:
        if fresh != text:
            print(f"{args.doc} is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        args.doc.write_text(fresh)
        print(f"rewrote the settings reference in {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
