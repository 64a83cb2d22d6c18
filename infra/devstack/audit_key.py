"""The demo's audit signing key: made once per data folder, so `make run`
signs checkpoints out of the box and keeps verifying them across restarts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

__all__ = ["dev_audit_keys"]

KEY_FILE: Final = "audit-signing-key"
KEY_ID: Final = "dev"


def dev_audit_keys(data_dir: Path) -> str:
    """``CHRONIK_AUDIT_SIGNING_KEYS`` for the data folder: read, or made and kept
    readable by this user only."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = f"{KEY_ID}:{secrets.token_hex(32)}"
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value
