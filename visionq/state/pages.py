"""A page of records from a tenant's index (a sorted set of ids at score 0, so in id order,
which is creation order): the shape `GET /v1/batches` and `GET /v1/files` page by.

An id whose record has expired is dropped from the index as it is met; the owner of the
index (`batches`, `files`) passes its key and its reader, so this module writes only what
its caller owns. `prune_indexes` drops them from every index's oldest end on the
sweeper's behalf (`pages/prune`), for the jobs', files' and batches' owners alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import redis

from visionq.state import keys
from visionq.state.redis import redis_errors, script

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


#: Ids looked at per call of `pages/prune`, and calls per index per round at most.
_PRUNE_BATCH, _PRUNE_CALLS = 500, 20


def prune_indexes(client: redis.Redis) -> int:
    """Drop the ids of expired records from every tenant's indexes (jobs, files, batches);
    how many. A record expires by its TTL, which its index cannot have (its members are
    ids at score 0), so without this an index would keep every id it was ever given until
    a list request met them: 100,000 jobs left about 14 MB behind (`python -m bench
    soak`). The sweeper calls it now and then; several at once are harmless."""
    prune = script(client, "pages/prune")
    removed = 0
    with redis_errors():
        for index in client.scan_iter(match=f"{keys.TENANT_PREFIX}*", count=1000):
            prefix = keys.TENANT_INDEX_RECORDS.get(index.rsplit(b":", 1)[-1].decode())
            if prefix is None:
                continue
            for _ in range(_PRUNE_CALLS):
                dropped = int(prune(keys=[index], args=[prefix, _PRUNE_BATCH]))
                removed += dropped
                if dropped < _PRUNE_BATCH:
                    break
    return removed
