"""The dashboard's login session and CSRF token.

Session (only with VESPER_API_TOKEN): the login form exchanges the token for the cookie
`vesper_session` = `<expiry>.<nonce>.<signature>`, HMAC-SHA256 under a key derived from
the token. Nothing is stored on the server: every API process sharing the token accepts
it, and changing the token ends every session. The cookie is HttpOnly (no script reads
it), SameSite=Strict (no other site's page sends it), limited to /ui, Secure over
HTTPS, and expires after SESSION_TTL. Logging out deletes it from the browser; a copy
taken before stays valid until it expires (a stateless session cannot be revoked alone).

The cookie authorizes the pages only: the JSON API keeps bearer auth, so it has no
ambient credential that a cross-site request could ride and needs no CSRF token.

CSRF (always, token or not: without a token the pages change jobs for anyone who
reaches them, a cross-site form included): a double-submit token. The cookie
`vesper_csrf` holds a random value (HttpOnly, SameSite=Strict); every form carries it
in the field `csrf_token`, and a POST whose field differs from the cookie, or lacks
either, is refused with 403. Another site can neither read the cookie nor make the
browser send it. A login issues a fresh one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import timedelta
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.exceptions import PermissionDeniedException

SESSION_COOKIE = "vesper_session"
CSRF_COOKIE = "vesper_csrf"
CSRF_FIELD = "csrf_token"
SESSION_TTL = timedelta(hours=8)
COOKIE_PATH = "/ui"


def _key(token: str) -> bytes:
    return hmac.new(token.encode(), b"vesper dashboard session v1", hashlib.sha256).digest()


def _signature(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def token_matches(presented: str, token: str) -> bool:
    """Constant-time: the time does not tell how much of the token matched."""
    return hmac.compare_digest(presented.encode(), token.encode())


def new_session(token: str, *, now: float | None = None) -> str:
    expiry = int((now if now is not None else time.time()) + SESSION_TTL.total_seconds())
    body = f"{expiry}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_signature(_key(token), body)}"


def session_valid(value: str | None, token: str, *, now: float | None = None) -> bool:
    if not value:
        return False
    body, _, signature = value.rpartition(".")
    expiry, dot, _nonce = body.partition(".")
    if not dot or not expiry.isdigit():
        return False
    if not hmac.compare_digest(signature.encode(), _signature(_key(token), body).encode()):
        return False
    return int(expiry) > (now if now is not None else time.time())


def _cookie(request: Request[Any, Any, Any], key: str, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=key,
        value=value,
        path=COOKIE_PATH,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def session_cookie(request: Request[Any, Any, Any], value: str) -> Cookie:
    return _cookie(request, SESSION_COOKIE, value, int(SESSION_TTL.total_seconds()))


def expired_session_cookie(request: Request[Any, Any, Any]) -> Cookie:
    return _cookie(request, SESSION_COOKIE, "", 0)


def csrf_cookie(request: Request[Any, Any, Any], value: str) -> Cookie:
    # outlives a session: a page left open past a login stays usable once logged in
    return _cookie(request, CSRF_COOKIE, value, int(SESSION_TTL.total_seconds()) * 3)


def csrf_token_of(request: Request[Any, Any, Any]) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (then set it as a cookie)."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and len(current) >= 32:
        return current, False
    return secrets.token_urlsafe(32), True


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


async def checked_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The POSTed form, once its CSRF token matched the cookie; 403 otherwise."""
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    expected = request.cookies.get(CSRF_COOKIE)
    if (
        not isinstance(presented, str)
        or not expected
        or not hmac.compare_digest(presented.encode(), expected.encode())
    ):
        raise PermissionDeniedException(
            detail="the form's CSRF token is missing or stale: reload the page and retry"
        )
    return {k: v for k, v in form.items() if isinstance(v, str)}
