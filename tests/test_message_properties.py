"""Whatever validation accepts builds a correct mail: the rule behind every header we write, as
a property over generated requests, and the cases that broke it, by name.

A correct mail parses back with Python's `email` package (policy=default) without a defect on
any part or header, has no line over 998 octets and no bare CR or LF, is 7-bit unless an
address needs SMTPUTF8, has exactly the headers we meant (BCC in none), and every text in it
(subject, display names, custom headers, file names, bodies) reads back as it was sent.
"""

from __future__ import annotations

import email
import operator
import re
from collections.abc import Callable
from email import policy
from email.errors import NonASCIILocalPartDefect
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.addresses import Address
from app.api.acceptance import prepare
from app.api.callers import Caller
from app.api.schemas import NotificationRequest
from app.delivery.mailer import OutgoingMail, build_message
from app.errors import InvalidRequest
from app.rendering.catalog import RenderedMail, TemplateCatalog
from tests.conftest import make_settings
from tests.smtp_server import mailboxes

TEMPLATES = {
    # a subject and bodies made of context values; the second derives its text part
    "greeting": {
        "subject.txt": "{{ greeting }} {{ name }}",
        "body.html": "<p>{{ greeting }}</p><p>{{ name }}</p>",
        "body.txt": "{{ greeting }}\n{{ name }}\n",
    },
    "derived": {"subject.txt": "{{ name }}", "body.html": "<h1>{{ greeting }}</h1>{{ name }}"},
}
EMAILS = [
    "ada@example.com",
    "b.c+d@example.org",
    "x@bücher.example",  # IDN: goes out as punycode
    "zoë@example.com",  # needs SMTPUTF8
]
Built = tuple[NotificationRequest, RenderedMail, OutgoingMail]
SENDERS = ["noreply@example.com", "support@example.com"]
# Text that looks like header syntax or encoded words, or is hard to fold or encode
TRICKY = [
    "=?",
    "?=",
    "=?UTF-8?Q?=0ABcc:_x@evil.example?=",
    "=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",
    " ",
    "  ",
    '"',
    "\\",
    "<x@evil.example>",
    ", ",
    ";",
    "(",
    ")",
    "@",
    ".",
    "€",
    "😀",
    "👩\u200d💻",
    "e\u0301",
    "\u00a0",
    "\u202e",
    "\u3000",
]
# What validation must refuse where it would reach a header, or anywhere (surrogates)
HOSTILE = [
    "\u2028",
    "\u2029",
    "\u0085",
    "\r\n",
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x1b",
    "\ud800",
    "\udfff",
]


def texts(longest: int) -> st.SearchStrategy[str]:
    """Any text: mostly text that may be accepted, spiced with encoded-word lookalikes, header
    syntax and long runs; sometimes with what must be refused (controls, separators, lone
    surrogates), so that both sides of the rule are tried."""
    clean = st.one_of(
        st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=8),
        st.sampled_from(TRICKY),
        st.builds(
            operator.mul,
            st.sampled_from(["A", "€", "a ", "😀", "=?", " ", "ü "]),
            st.integers(0, longest),
        ),
    )
    hostile = st.one_of(
        clean, st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=()), max_size=4)
    )
    joined = st.lists(clean, max_size=6).map("".join)
    return st.one_of(joined, joined, joined, joined, st.lists(hostile, max_size=6).map("".join))


def addresses(email_choices: list[str]) -> st.SearchStrategy[Any]:
    mail = st.sampled_from(email_choices)
    name = texts(120)
    return st.one_of(
        mail,
        st.builds(lambda e, n: {"email": e, "name": n}, mail, name),
        st.builds(lambda e, n: f"{n} <{e}>", mail, name),
        st.builds(lambda e, n: f'"{n}" <{e}>', mail, name),
    )


header_names = st.one_of(
    st.from_regex(r"X-[A-Za-z0-9][A-Za-z0-9-]{0,20}", fullmatch=True),
    st.sampled_from(["X-A", "X-a", "X-A\n", "X-" + "B" * 63]),
)
attachments = st.builds(
    lambda filename, kind, inline, cid: {
        "filename": filename,
        "content_type": kind,
        "content": "aGVsbG8=",
        "inline": inline,
        **({"content_id": cid} if inline else {}),
    },
    texts(300),
    st.sampled_from(["application/pdf", "image/png", "text/plain"]),
    st.booleans(),
    st.from_regex(r"[A-Za-z0-9._-]{1,20}(@[A-Za-z0-9.-]{1,20})?", fullmatch=True),
)
context_values = st.one_of(
    texts(1200), st.integers(), st.floats(), st.sampled_from([float("nan"), float("inf")])
)
requests = st.fixed_dictionaries(
    {
        "template": st.sampled_from(sorted(TEMPLATES)),
        "to": st.lists(addresses(EMAILS), min_size=1, max_size=3),
        "context": st.fixed_dictionaries({"greeting": context_values, "name": context_values}),
    },
    optional={
        "cc": st.lists(addresses(EMAILS), max_size=2),
        "bcc": st.lists(st.sampled_from(["secret-auditor@example.com"]), max_size=1),
        "reply_to": addresses(EMAILS),
        "from": addresses(SENDERS),
        "subject": texts(600),
        "headers": st.dictionaries(header_names, texts(1000), max_size=3),
        "attachments": st.lists(attachments, max_size=3),
    },
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], Built | str]:
    """A function from a request as sent to the validated request, its rendering and the mail
    built from it as delivery builds it; or, when validation refuses it, the refused field."""
    folder = tmp_path_factory.mktemp("templates")
    for name, files in TEMPLATES.items():
        (folder / name).mkdir()
        for filename, source in files.items():
            (folder / name / filename).write_text(source, encoding="utf-8")
    settings = make_settings(folder, 25, templates_dir=folder)
    catalog = TemplateCatalog(folder)

    def build(data: dict[str, Any]) -> Built | str:
        try:
            request = NotificationRequest.model_validate(data)
            new = prepare(request, settings=settings, catalog=catalog, caller=Caller("test"))
        except ValidationError as exc:
            return str(exc.errors()[0]["loc"][0])  # refused before the 202: never built
        except InvalidRequest as exc:
            return str(exc.loc[1])
        assert request.sender is not None  # prepare() sets the effective sender
        rendered = catalog.render(request.template, request.context, subject=request.subject)
        mail = build_message(request, rendered, sender=request.sender, message_id=new.message_id)
        return request, rendered, mail

    return build


_ENCODED_WORD = re.compile(rb"=\?utf-8\?[bq]\?[^?\s]*\?=")


def check_mail(request: NotificationRequest, rendered: RenderedMail, mail: OutgoingMail) -> None:
    data = mail.data
    assert max(map(len, data.split(b"\r\n"))) <= 998
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"), "bare CR or LF"
    assert mail.smtputf8 or data.isascii()
    # RFC 2047: at most 75 characters each (bodies are quoted-printable or base64: no "=?")
    assert all(len(word) <= 75 for word in _ENCODED_WORD.findall(data))
    message = parse(data)
    assert_no_defects(message, smtputf8=mail.smtputf8)

    assert message.keys() == [
        "From",
        "To",
        *(["Cc"] if request.cc else []),
        *(["Reply-To"] if request.reply_to else []),
        "Subject",
        "Date",
        "Message-ID",
        *request.headers,
        "MIME-Version",
        "Content-Type",
    ]
    assert str(message["Subject"]) == rendered.subject
    assert request.sender is not None
    assert mailboxes(message, "From") == expected_mailboxes([request.sender])
    assert mailboxes(message, "To") == expected_mailboxes(request.to)
    if request.cc:
        assert mailboxes(message, "Cc") == expected_mailboxes(request.cc)
    if request.reply_to:
        assert mailboxes(message, "Reply-To") == expected_mailboxes([request.reply_to])
    for name, value in request.headers.items():
        assert str(message[name]) == value
    assert b"secret-auditor" not in data

    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    assert lines(text.get_content()) == lines(rendered.text)
    assert lines(html.get_content()) == lines(rendered.html)

    files = [p for p in message.walk() if p.get_content_disposition() in ("inline", "attachment")]
    sent = [a for a in request.attachments if a.inline] + [
        a for a in request.attachments if not a.inline
    ]
    assert len(files) == len(sent)
    for part, attachment in zip(files, sent, strict=True):
        # the headers' params, not get_filename(): that one strips "<...>" and '"..."' again
        assert part["Content-Disposition"].params["filename"] == attachment.filename
        assert part["Content-Type"].params["name"] == attachment.filename
        assert part.get_content_type() == attachment.content_type
        assert part.get_content_disposition() == ("inline" if attachment.inline else "attachment")
        if attachment.content_id:
            assert str(part["Content-ID"]) == f"<{attachment.content_id}>"
        assert part.get_payload(decode=True) == b"hello"


def parse(data: bytes) -> EmailMessage:
    # An SMTPUTF8 message's headers are UTF-8 (RFC 6532); Python reads them from text only.
    if data.isascii():
        return email.message_from_bytes(data, policy=policy.default)
    return email.message_from_string(data.decode("utf-8"), policy=policy.default)


def assert_no_defects(message: EmailMessage, *, smtputf8: bool) -> None:
    for part in message.walk():
        assert not part.defects, (part.defects, part)
        for name, header in part.items():
            defects = [
                d
                for d in header.defects
                # RFC 6532 allows a UTF-8 local part; Python's parser flags it regardless
                if not (smtputf8 and isinstance(d, NonASCIILocalPartDefect))
            ]
            assert not defects, (name, str(header), defects)


def expected_mailboxes(addresses: list[Address]) -> list[tuple[str, str]]:
    return [(a.name or "", a.smtp_email) for a in addresses]


def lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")


TRAP = "=?UTF-8?Q?=0ABcc:_x@evil.example?="  # decodes to a line break and a Bcc header
FILE = {"content_type": "text/plain", "content": "aGVsbG8="}
ISSUE_EXAMPLES: dict[str, dict[str, Any]] = {
    "5000 characters rendered into the subject": {
        "context": {"greeting": "Hi", "name": "A" * 5000}
    },
    "255 euro signs as a file name": {"attachments": [{**FILE, "filename": "€" * 255}]},
    "encoded-word lookalikes everywhere": {
        "subject": TRAP,
        "to": [{"email": "ada@example.com", "name": TRAP}, f"{TRAP} <b.c+d@example.org>"],
        "reply_to": {"email": "ada@example.com", "name": "=?"},
        "headers": {"X-Trap": TRAP, "X-Half": "a =? b ?= c"},
        "attachments": [{**FILE, "filename": TRAP}],
        "context": {"greeting": TRAP, "name": "=?utf-8?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?="},
    },
    "long words and names": {
        "subject": "x" * 500,
        "to": [
            {"email": "ada@example.com", "name": "B" * 200},
            {"email": "b.c+d@example.org", "name": "é" * 60},  # after the first: more room
            {"email": "x@bücher.example", "name": "ab" * 60 + "é"},
        ],
        "cc": [{"email": "x@bücher.example", "name": "Ä" * 200}],
        "from": {"email": "noreply@example.com", "name": "😀" * 200},
        "headers": {"X-Long": "x" * 900, "X-" + "N" * 63: "€" * 900, "X-Words": "word " * 179},
    },
    "file names that look quoted": {
        "attachments": [{**FILE, "filename": "<x@evil.example>"}, {**FILE, "filename": '"a"'}]
    },
    "spaces a reader would drop": {
        "subject": "  two  spaces  ",
        "headers": {"X-Edges": " x ", "X-Empty": ""},
        "attachments": [{**FILE, "filename": "a  b.txt"}],
    },
}


@pytest.mark.parametrize("change", ISSUE_EXAMPLES.values(), ids=ISSUE_EXAMPLES.keys())
def test_the_issues_examples_build_correct_mails(
    built: Callable[[dict[str, Any]], Built | str], change: dict[str, Any]
) -> None:
    request = {
        "template": "greeting",
        "to": ["ada@example.com"],
        "context": {"greeting": "Hi", "name": "Ada"},
        **change,
    }
    result = built(request)
    assert not isinstance(result, str), f"{result} refused"
    check_mail(*result)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests)
@example(
    request={
        "template": "greeting",
        "to": ["ada@example.com"],
        "context": {"greeting": "Hi", "name": "A" * 5000},
    }
)
def test_every_accepted_request_builds_a_correct_mail(
    built: Callable[[dict[str, Any]], Built | str], request: dict[str, Any]
) -> None:
    result = built(request)
    if isinstance(result, str):
        event("refused", result)
    else:
        event("accepted")
        check_mail(*result)
