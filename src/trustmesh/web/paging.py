"""Pages of a list that can grow: `limit` and `offset` (bounded), the total in `X-Total-Count`, and the next page
in `Link: <…>; rel="next"` (RFC 8288) while more remain. The body keeps its shape; only the window changes.

    @router.get("/datasets")
    def datasets(catalog: CatalogDep, pages: DatasetPages) -> list[dict[str, Any]]:
        return pages(catalog.datasets())
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request, Response

T = TypeVar("T")
MAX_OFFSET = 1_000_000
PAGE_HEADERS: dict[str, Any] = {
    "X-Total-Count": {"description": "How many items there are in all pages together.",
                      "schema": {"type": "integer", "minimum": 0}},
    "Link": {"description": 'The next page, `<URL>; rel="next"`, while more remain.', "schema": {"type": "string"}},
}
PAGED: dict[int | str, dict[str, Any]] = {200: {"headers": PAGE_HEADERS}}


@dataclass(frozen=True)
class PageLinks:
    """Writes the paging headers of one answer."""

    request: Request
    response: Response

    def __call__(self, total: int, following: dict[str, Any] | None) -> None:
        """`total` items in all pages; `following`: the query parameters that change for the next page (None:
        this is the last one), e.g. `{"before": 120}` for a cursor."""
        self.response.headers["X-Total-Count"] = str(total)
        if following:
            url = self.request.url.include_query_params(**following)
            self.response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'

    def by_offset(self, total: int, *, limit: int, offset: int) -> None:
        """This answer holds `limit` items from `offset` of `total`."""
        self(total, {"offset": offset + limit, "limit": limit} if offset + limit < total else None)


def page_links(request: Request, response: Response) -> PageLinks:
    return PageLinks(request, response)


@dataclass(frozen=True)
class Pager:
    """One page of a list the service returns whole: `pager(items)` is the window, with the headers set."""

    links: PageLinks
    limit: int
    offset: int

    def __call__(self, items: Sequence[T]) -> list[T]:
        self.links.by_offset(len(items), limit=self.limit, offset=self.offset)
        return list(items[self.offset:self.offset + self.limit])

    def window(self, *lists: Sequence[Any]) -> list[list[Any]]:
        """The same window over several lists of one answer; the total is the longest list's."""
        self.links.by_offset(max((len(items) for items in lists), default=0), limit=self.limit,
                             offset=self.offset)
        return [list(items[self.offset:self.offset + self.limit]) for items in lists]


def pages(default: int, maximum: int) -> Callable[..., Pager]:
    """A dependency giving a `Pager` with `limit` (1 to `maximum`, default `default`) and `offset` parameters."""

    def pager(request: Request, response: Response, limit: int = default, offset: int = 0) -> Pager:
        return Pager(PageLinks(request, response), limit, offset)

    # Real objects, not strings: the bounds live in this closure, where FastAPI cannot evaluate an annotation.
    pager.__annotations__ = {
        "request": Request, "response": Response, "return": Pager,
        "limit": Annotated[int, Query(ge=1, le=maximum, description=f"Most items to return (at most {maximum}).")],
        "offset": Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip: the `offset` of the "
                                                                        "`Link: rel=\"next\"` header.")],
    }
    return pager
