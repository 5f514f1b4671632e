"""Who is signed in to the console, and whether a form came from our own page.

Signing in with an API key sets a session cookie holding the SHA-256 digest of that key (never the
key), signed and timestamped (itsdangerous), HttpOnly, SameSite=Strict, Secure over HTTPS. Every
request finds the key by that digest again, so a key removed from the keys file ends its sessions
at once, and a changed scope applies at once.

Forms carry a CSRF token (in the form, or the `X-CSRF-Token` header), signed. Once signed in, it
is bound to the session: the session cookie holds a random value that only its own token
carries, so a token got anywhere else (another browser's sign-in page, a cookie planted by a
sibling subdomain) does not pass. Before signing in (the sign-in form), and with AUTH=off where
there are no sessions, it is a double submit: the same signed value in a cookie of its own. With
SameSite=Strict cookies this is a second lock on the same door.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.api.api_keys import ApiKey
from app.api.callers import ANONYMOUS, Caller
from app.api.keyring import Keyring
from app.settings import Settings

SESSION_COOKIE = "notifier_session"
CSRF_COOKIE = "notifier_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Signer:
    """Signs and checks the console's cookies with CONSOLE_SECRET (else a per-process secret)."""

    session: URLSafeTimedSerializer
    csrf: URLSafeTimedSerializer
    max_age: int  # seconds a session (and a CSRF token) lasts

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        configured = settings.console_secret
        secret = configured.get_secret_value() if configured else secrets.token_hex(32)
        return cls(
            session=URLSafeTimedSerializer(secret, salt="notifier.console.session"),
            csrf=URLSafeTimedSerializer(secret, salt="notifier.console.csrf"),
            max_age=round(settings.console_session_hours * 3600),
        )

    def session_cookie(self, offered_key: str) -> str:
        return self.session.dumps({"key": _digest(offered_key), "csrf": secrets.token_hex(16)})

    def _session(self, cookie: str | None) -> dict[str, str] | None:
        """The session's data, if the cookie is ours and not expired."""
        if not cookie:
            return None
        try:
            data = self.session.loads(cookie, max_age=self.max_age)
        except BadSignature:  # SignatureExpired included
            return None
        if not isinstance(data, dict) or not all(
            isinstance(data.get(name), str) for name in ("key", "csrf")
        ):
            return None
        return data

    def has_session(self, cookie: str | None) -> bool:
        return self._session(cookie) is not None

    def signed_in(self, cookie: str | None, keys: Keyring) -> Caller | None:
        """The caller whose key signed this session in, if the cookie is ours, not expired, and
        the key is still configured."""
        data = self._session(cookie)
        return None if data is None else _by_digest(keys.keys, data["key"])

    def form_token(self, *, session: str | None, csrf_cookie: str | None) -> tuple[str, bool]:
        """The CSRF token this browser's forms carry, and whether it is a new double-submit
        value (to be set as the CSRF cookie)."""
        data = self._session(session)
        if data is not None:
            return self.csrf.dumps(data["csrf"]), False
        if csrf_cookie and self.csrf_valid(csrf_cookie):
            return csrf_cookie, False
        return self.new_csrf_token(), True

    def form_token_valid(
        self, sent: str | None, *, session: str | None, csrf_cookie: str | None
    ) -> bool:
        """Whether a POST's token is the one `form_token` gave this browser."""
        data = self._session(session)
        if data is None:
            return self.csrf_matches(csrf_cookie, sent)
        if not sent:
            return False
        try:
            value = self.csrf.loads(sent, max_age=self.max_age)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, data["csrf"])

    def new_csrf_token(self) -> str:
        return self.csrf.dumps(secrets.token_hex(16))

    def csrf_valid(self, token: str | None) -> bool:
        if not token:
            return False
        try:
            self.csrf.loads(token, max_age=self.max_age)
        except BadSignature:
            return False
        return True

    def csrf_matches(self, cookie: str | None, sent: str | None) -> bool:
        """The form's copy equals the cookie's, and the cookie's is one we signed."""
        if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
            return False
        return self.csrf_valid(cookie)


def console_caller(
    signer: Signer, *, auth: str, cookie: str | None, keys: Keyring
) -> Caller | None:
    """Who the console serves: everyone when AUTH=off, else the signed-in caller (or None)."""
    if auth == "off":
        return ANONYMOUS
    return signer.signed_in(cookie, keys)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _by_digest(keys: tuple[ApiKey, ...], digest: str) -> Caller | None:
    found = None
    for key in keys:  # every key compared, in constant time, as app.api.api_keys does
        if hmac.compare_digest(key.digest.encode(), digest.encode()):
            found = key.caller
    return found
