"""The webhook signature: `t=<unix>,v1=<hex>` (one `v1` per secret while rotating), the hex
HMAC-SHA256 of "<t>.<raw body>" keyed with the secret's UTF-8 bytes, as Stripe signs."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from hypothesis import given
from hypothesis import strategies as st

from app.webhooks.signature import TOLERANCE_SECONDS, signature_header, verify

_HEADER = re.compile(r"t=(\d+)((?:,v1=[0-9a-f]{64})+)")

secrets = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
bodies = st.binary(max_size=300)
stamps = st.integers(min_value=0, max_value=2**40)


@given(body=bodies, keys=st.lists(secrets, min_size=1, max_size=3), t=stamps)
def test_any_body_and_secrets_give_a_header_in_the_documented_format(
    body: bytes, keys: list[str], t: int
) -> None:
    header = signature_header(body, keys, timestamp=t)
    match = _HEADER.fullmatch(header)
    assert match is not None and int(match[1]) == t
    v1s = match[2].split(",v1=")[1:]
    assert v1s == [
        hmac.new(k.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        for k in keys
    ]
    for key in keys:  # a receiver holding any one of the secrets verifies
        assert verify(header, body, key, now=t)


@given(body=bodies, key=secrets, other=secrets, t=stamps, extra=st.binary(min_size=1, max_size=8))
def test_a_changed_body_another_secret_or_an_old_time_does_not_verify(
    body: bytes, key: str, other: str, t: int, extra: bytes
) -> None:
    header = signature_header(body, [key], timestamp=t)
    assert not verify(header, body + extra, key, now=t)
    assert other == key or not verify(header, body, other, now=t)
    assert not verify(header, body, key, now=t + TOLERANCE_SECONDS + 1)  # a replay
    assert verify(header, body, key, now=t + TOLERANCE_SECONDS)


@given(header=st.text(max_size=200), body=bodies, key=secrets)
def test_any_header_text_is_judged_without_error(header: str, body: bytes, key: str) -> None:
    assert verify(header, body, key, now=0) in {True, False}


def test_the_readmes_verifier_accepts_our_signatures_and_refuses_others() -> None:
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"```python\n(import hashlib.*?)```", readme, re.DOTALL)
    assert code is not None and len(code[1].strip().splitlines()) <= 10
    namespace: dict[str, object] = {}
    exec(code[1], namespace)
    readme_verify = namespace["verify"]
    assert callable(readme_verify)
    body, now = b'{"id": "e1", "type": "notification.sent"}', int(time.time())
    header = signature_header(
        body, ["new-secret-0123456789", "old-secret-0123456789"], timestamp=now
    )
    assert readme_verify(header, body, "old-secret-0123456789")
    assert readme_verify(header, body, "new-secret-0123456789")
    assert not readme_verify(header, body + b" ", "new-secret-0123456789")
    old = signature_header(body, ["new-secret-0123456789"], timestamp=now - 301)
    assert not readme_verify(old, body, "new-secret-0123456789")


def test_the_readmes_receiver_takes_only_its_own_callers_events() -> None:
    """Callers sharing WEBHOOK_SECRET sign alike: the README's `accept` checks the signed
    `caller` too, so billing's event (sent or replayed to web's URL) is not web's."""
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    verifier = re.search(r"```python\n(import hashlib.*?)```", readme, re.DOTALL)
    receiver = re.search(r"```python\n(import json\n.*?)```", readme, re.DOTALL)
    assert verifier is not None and receiver is not None
    namespace: dict[str, object] = {}
    exec(verifier[1] + receiver[1], namespace)
    accept = namespace["accept"]
    assert callable(accept)
    secret, now = "shared-secret-0123456789", int(time.time())
    billings = b'{"id": "e1", "caller": "billing", "notification": {"metadata": {}}}'
    header = signature_header(billings, [secret], timestamp=now)
    assert accept(header, billings, secret, "billing") == json.loads(billings)
    assert accept(header, billings, secret, "web") is None
    forged = billings.replace(b'"billing"', b'"web"')
    assert accept(header, forged, secret, "web") is None  # the name is signed
