"""Header values as they go on the wire: no line longer than 998 octets (RFC 5322 2.1.1),
folded near 78 columns where the text allows, and read back by a reader that follows the
RFCs as exactly the text given.

Plain ASCII text goes as it is, folded at its spaces. Any other text (not ASCII, holding an
encoded-word lookalike "=?", spaces a reader would drop or merge, a word too long to fold) goes
entirely as RFC 2047 encoded words: a reader decodes them to our text and nothing else, so a
caller's "=?utf-8?q?...?=" reads back literally instead of being decoded into something else.
File names go in RFC 2231 parameters, split into numbered sections when long.

Every encoded word and every section holds whole characters: readers decode each one on its
own (Python's `email` does), and half a character would not survive.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from urllib.parse import quote

from app.addresses import Address

FOLD_AT = 78  # RFC 5322: lines SHOULD be at most 78 characters...
MAX_LINE = 998  # ...and MUST be at most 998
_WORD_TEXT = 75 - len("=?utf-8?q??=")  # RFC 2047: an encoded word is at most 75 characters
# atoms (RFC 5322 atext) separated by single spaces: a display name that needs no quotes
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# what Q-encoding may leave as it is even inside a display name (RFC 2047 5(3))
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_PARAM_SAFE = "!#$&+^`|"  # RFC 2231 attribute-chars besides letters, digits and "-._~"


def unstructured(name: str, text: str) -> str:
    """The value of an unstructured header (Subject, X-...)."""
    column = len(name) + 2
    if _plain(text) and (folded := _fold(text, column)) is not None:
        return folded
    return _encoded_words(text, column)


def address_header(name: str, addresses: Iterable[Address]) -> str:
    """The value of From, To, Cc or Reply-To: one mailbox per line."""
    column = len(name) + 2
    mailboxes = []
    for address in addresses:
        mailboxes.append(_mailbox(address, column))
        column = 1
    return ",\r\n ".join(mailboxes)


def _mailbox(address: Address, column: int) -> str:
    if not address.name:
        return address.smtp_email
    name = address.name
    display = None
    if _plain(name):
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        display = _fold(name if _ATOMS.fullmatch(name) else quoted, column)
    if display is None:
        display = _encoded_words(name, column)
    last_line = display.rpartition("\n")[2]
    width = len(last_line) if "\n" in display else column + len(last_line)
    angle_addr = f"<{address.smtp_email}>"
    separator = " " if width + 1 + len(angle_addr) <= FOLD_AT else "\r\n "
    return display + separator + angle_addr


def parameter(name: str, value: str) -> str:
    """`name=value` for a MIME header (a file name): quoted when plain ASCII, else RFC 2231
    (UTF-8, percent-encoded), in numbered sections of at most one line each when long."""
    quoted = f'{name}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if _plain(value) and len(quoted) + 2 <= MAX_LINE:  # " " before, ";" after
        return quoted
    tokens = [quote(ch, safe=_PARAM_SAFE) for ch in value]
    overhead = len(f" {name}*99*=;")
    first = FOLD_AT - overhead - len("utf-8''")
    sections = _chunks(tokens, len, first=first, rest=FOLD_AT - overhead)
    if len(sections) == 1:
        return f"{name}*=utf-8''" + "".join(sections[0])
    return ";\r\n ".join(
        f"{name}*{index}*=" + ("utf-8''" if index == 0 else "") + "".join(section)
        for index, section in enumerate(sections)
    )


def _plain(text: str) -> bool:
    """ASCII that reads back as itself when written raw: printable, no "=?", and no spaces a
    reader would drop (at the ends) or merge (two in a row)."""
    return (
        text.isascii()
        and text.isprintable()
        and "=?" not in text
        and "  " not in text
        and not text.startswith(" ")
        and not text.endswith(" ")
    )


def _fold(text: str, column: int) -> str | None:
    """`text` (starting at `column`) with a line break before some of its spaces, so that
    lines stay within FOLD_AT where its words allow; None if a word cannot fit in MAX_LINE.
    Unfolding removes exactly the line breaks, so the text reads back unchanged."""
    if column + len(text) <= FOLD_AT:
        return text
    words = text.split(" ")
    width = column + len(words[0])
    if width > MAX_LINE:
        return None
    out = [words[0]]
    for word in words[1:]:
        if word and width + 1 + len(word) > FOLD_AT:
            out.append("\r\n ")
            width = 1 + len(word)
        else:
            out.append(" ")
            width += 1 + len(word)
        out.append(word)
        if width > MAX_LINE:
            return None
    return "".join(out)


def _encoded_words(text: str, column: int) -> str:
    """`text` as RFC 2047 encoded words, one per line after the first: Q (readable) when that
    is shorter, as for mostly-ASCII text; else B (base64)."""
    q_tokens = [_q(ch) for ch in text]
    data_length = len(text.encode("utf-8"))
    first = min(FOLD_AT - column - len("=?utf-8?q??="), _WORD_TEXT)
    if sum(map(len, q_tokens)) <= (data_length + 2) // 3 * 4:
        chunks = _chunks(q_tokens, len, first=first, rest=_WORD_TEXT)
        words = ["=?utf-8?q?" + "".join(chunk) + "?=" for chunk in chunks]
    else:
        # base64 writes 4 characters for each 3 bytes: budgets in bytes
        chars = list(text)
        chunks = _chunks(chars, _utf8_length, first=first // 4 * 3, rest=_WORD_TEXT // 4 * 3)
        words = [
            "=?utf-8?b?" + base64.b64encode("".join(chunk).encode()).decode() + "?="
            for chunk in chunks
        ]
    return "\r\n ".join(words)


def _chunks(
    pieces: list[str], size: Callable[[str], int], *, first: int, rest: int
) -> list[list[str]]:
    """`pieces` in runs whose sizes add up to at most `first` (the first run), then `rest`; a
    run holds at least one piece, so a narrow first line still makes progress."""
    chunks: list[list[str]] = [[]]
    budget, used = first, 0
    for piece in pieces:
        n = size(piece)
        if chunks[-1] and used + n > budget:
            chunks.append([])
            budget, used = rest, 0
        chunks[-1].append(piece)
        used += n
    return chunks


@lru_cache(maxsize=4096)
def _q(ch: str) -> str:
    if ch in _Q_SAFE:
        return ch
    if ch == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in ch.encode("utf-8"))


def _utf8_length(ch: str) -> int:
    return len(ch.encode("utf-8"))
