"""What a second shell needs to talk to ``chronik dev``: an operator token made
once per data folder, and ``dev.env`` with the URL and the demo team's key.

Both files are readable by this user only, beside the embedded servers' data
(which already trusts every local connection); neither is used outside the
dev stack. The README's tour sources ``dev.env``.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["ENV_FILE", "dev_operator_token", "write_dev_env"]

TOKEN_FILE: Final = "operator-token"  # noqa: S105 - a file name
ENV_FILE: Final = "dev.env"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def dev_operator_token(data_dir: Path) -> str:
    """The data folder's operator token: read, or made (``chop_`` + 32 random bytes)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = f"chop_{secrets.token_urlsafe(32)}"
    _write_private(path, token + "\n")
    return token


def write_dev_env(data_dir: Path, values: Mapping[str, str]) -> Path:
    """``NAME='value'`` lines a POSIX shell can source (``. .chronik/dev.env``)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / ENV_FILE
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    _write_private(path, "\n".join(lines) + "\n")
    return path
