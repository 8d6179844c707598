"""API-key authentication: ``Authorization: Bearer <key>``, keys from the settings.

A job belongs to the key that created it; the store keeps the key's SHA-256,
never the key. Keys are compared in constant time, against every configured
key, so timing reveals neither a key nor which one matched.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials

from distill.errors import ConfigError
from jobs.settings import Settings

OPEN_OWNER = "open"  # the owner of every job when the service runs without keys


def owner_of(key: str) -> str:
    """The stored identity of a key: its SHA-256 (hex)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_auth_settings(settings: Settings) -> None:
    """Refuses an unprotected service unless it was explicitly asked to run open."""
    if not settings.api_keys and not settings.allow_open:
        raise ConfigError("no API keys configured: set DISTILL_API_KEYS (comma-separated) or "
                          "DISTILL_ALLOW_OPEN=true to run without authentication")


def authenticate(settings: Settings, credentials: HTTPAuthorizationCredentials | None,
                 raw_header: str | None) -> str:
    """Returns the caller's owner id, or raises 401 saying what is wrong with the key."""
    if not settings.api_keys:
        return OPEN_OWNER
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        reason = ("missing API key: send 'Authorization: Bearer <key>'" if not raw_header else
                  "malformed Authorization header: expected 'Bearer <key>'")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, reason, headers=challenge)
    given = credentials.credentials.encode("utf-8")
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    if not matched:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=challenge)
    return owner_of(credentials.credentials)
