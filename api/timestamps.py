"""Times in queries and bodies: RFC 3339 with an offset, and nothing else.

Pydantic also takes a number for a datetime (seconds or milliseconds since
1970); the OpenAPI document promises a date-time string, so a number is a 422
like any other value that breaks the documented schema, not a silent guess.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BeforeValidator

__all__ = ["Rfc3339"]

_NUMBER: Final = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _date_time_text(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and not _NUMBER.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2025-05-01T09:00:00Z")


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]
