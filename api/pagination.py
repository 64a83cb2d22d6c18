"""Keyset pagination as clients see it: ``?limit=&cursor=`` in,
``{"data": [...], "next_cursor"}`` out."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, Field

from api.responses import OrjsonResponse

__all__ = ["MAX_PAGE", "PageQuery", "page_response"]

MAX_PAGE: Final = 200


class PageQuery(BaseModel):
    """Query parameters every list accepts; lists add their filters."""

    limit: int = Field(default=50, ge=1, le=MAX_PAGE, description="Page size.")
    cursor: str | None = Field(
        default=None, max_length=200, description="next_cursor of the previous page."
    )


def page_response(data: list[dict[str, Any]], next_cursor: str | None) -> OrjsonResponse:
    return OrjsonResponse({"data": data, "next_cursor": next_cursor})
