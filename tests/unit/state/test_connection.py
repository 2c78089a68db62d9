"""Reaching Redis from one URL: a Sentinel group's URL read into its parts, the same group
spelled for Celery, and writes held until replicas have them (`Replicas`)."""

from __future__ import annotations

import pytest
import redis

from visionq.broker.celery_redis import celery_config
from visionq.errors import Unavailable
from visionq.settings import Settings
from visionq.state.connection import SentinelUrl, open_redis, sentinel_url
from visionq.state.redis import Replicas

GROUP = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2"


def test_a_sentinel_url_names_its_sentinels_service_database_and_passwords() -> None:
    assert sentinel_url(GROUP + "?sentinel_password=other") == SentinelUrl(
        sentinels=[("10.0.0.1", 26379), ("10.0.0.2", 26380)],
        service="mymaster",
        db=2,
        password="s3cret",  # noqa: S106 (a test value)
        sentinel_password="other",  # noqa: S106
    )
    found = sentinel_url("redis+sentinel://h:26379/svc")
    assert found is not None and (found.db, found.password) == (0, None)
    assert sentinel_url("redis://127.0.0.1:6379/0") is None


@pytest.mark.parametrize(
    "url", ["redis+sentinel://h:26379", "redis+sentinel://h/svc", "redis+sentinel://h:1/a/b/c"]
)
def test_a_malformed_sentinel_url_says_what_it_needs(url: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)sentinel"):
        sentinel_url(url)


def test_celery_reaches_the_same_group_through_its_own_sentinel_transport() -> None:
    config = celery_config(Settings(redis_url=GROUP))
    assert config["broker_url"] == (
        "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://:s3cret@10.0.0.2:26380/2"
    )
    assert config["broker_transport_options"]["master_name"] == "mymaster"
    plain = celery_config(Settings(redis_url="redis://127.0.0.1:6379/0"))
    assert plain["broker_url"] == "redis://127.0.0.1:6379/0"
    assert "master_name" not in plain["broker_transport_options"]


def test_a_client_of_a_sentinel_url_asks_the_sentinels_for_the_master() -> None:
    client = open_redis("redis+sentinel://127.0.0.1:1/mymaster/0", socket_connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError, match=r"master"):
        client.ping()  # no sentinel answers: no master can be found


def test_a_write_not_held_by_enough_replicas_is_unavailable(redis_db: redis.Redis) -> None:
    Replicas().confirm(redis_db)  # none asked for: nothing to wait for
    with pytest.raises(Unavailable) as short:
        Replicas(count=1, timeout=0.1).confirm(redis_db)  # a lone server has none
    assert short.value.status == 503 and short.value.retry_after
