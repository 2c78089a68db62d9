"""A page of records from a tenant's index (a sorted set of ids at score 0, so in id order,
which is creation order): the shape `GET /v1/batches` and `GET /v1/files` page by.

An id whose record has expired is dropped from the index as it is met; the owner of the
index (`batches`, `files`) passes its key and its reader, so this module writes only what
its caller owns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import redis

from visionq.state.redis import redis_errors

R = TypeVar("R")


def index_page(
    client: redis.Redis,
    index: str,
    *,
    key: Callable[[str], str],
    read: Callable[[str, dict[bytes, bytes]], R | None],
    limit: int,
    after: str | None,
    newest_first: bool = True,
    keep: Callable[[R], bool] = lambda _: True,
) -> tuple[list[R], bool]:
    """Up to `limit` records after the id `after` that `keep` accepts, and whether more
    follow. One round trip for the ids and one for their hashes, per `limit + 1` ids."""
    found: list[R] = []
    bound = f"({after}" if after else ("+" if newest_first else "-")
    with redis_errors():
        while len(found) <= limit:
            if newest_first:
                page = client.zrevrangebylex(index, bound, "-", start=0, num=limit + 1)
            else:
                page = client.zrangebylex(index, bound, "+", start=0, num=limit + 1)
            ids = [i.decode() for i in cast(list[bytes], page)]
            if not ids:
                break
            pipe = client.pipeline(transaction=False)
            for item_id in ids:
                pipe.hgetall(key(item_id))
            for item_id, raw in zip(ids, pipe.execute(), strict=True):
                record = read(item_id, raw)
                if record is None:
                    client.zrem(index, item_id)
                elif keep(record):
                    found.append(record)
            bound = f"({ids[-1]}"
    return found[:limit], len(found) > limit
