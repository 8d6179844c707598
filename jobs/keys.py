"""Every Redis key the service writes beside RQ's own, in one place (as rq's
``Job.key_for``): ``distill:<queue prefix>:<what>``, so that two services sharing a
Redis under different queue prefixes never read each other's keys."""

from __future__ import annotations


def redis_key(queue: str, *parts: str) -> str:
    """``distill:<queue>:<part>:<part>...``; a trailing ``""`` part gives a prefix."""
    return ":".join(("distill", queue, *parts))
