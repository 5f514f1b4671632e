"""Warnings a sender wants before sending, read off a template's rendered HTML with the standard
library's HTMLParser (which never rejects input: whatever HTML it gets, it reads what it can)."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

# Gmail clips a message whose HTML is over 102 KB, hiding the rest behind a link.
GMAIL_CLIP_BYTES = 102 * 1024


@dataclass(frozen=True)
class LintWarning:
    code: str
    message: str


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.warnings: list[LintWarning] = []
        self._link: tuple[str, bool] | None = None  # href of the open <a>, and has it text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            if "alt" not in values:
                src = (values.get("src") or "")[:80]
                self._warn("img_without_alt", f"<img src={src!r}> has no alt text")
            elif self._link is not None and (values["alt"] or "").strip():
                self._link = (self._link[0], True)
        elif tag == "a":
            href = (values.get("href") or "").strip()
            if href[:7].lower() == "http://":
                self._warn("http_link", f"link to {href[:80]!r} is not https")
            self._link = (href, False)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None:
            href, has_text = self._link
            if not has_text:
                self._warn("empty_link", f"link to {href[:80]!r} has no text")
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._link is not None and data.strip():
            self._link = (self._link[0], True)

    def _warn(self, code: str, message: str) -> None:
        self.warnings.append(LintWarning(code, message))


def lint_html(html: str, *, has_text_part: bool = True) -> list[LintWarning]:
    """Every warning for `html`, in the order found; never raises."""
    warnings = []
    size = len(html.encode("utf-8", "surrogatepass"))
    if size > GMAIL_CLIP_BYTES:
        warnings.append(
            LintWarning(
                "html_too_big",
                f"the HTML is {size} bytes; Gmail clips messages over {GMAIL_CLIP_BYTES} bytes",
            )
        )
    if not has_text_part:
        warnings.append(
            LintWarning("no_text_part", "no body.txt: the text part is derived from the HTML")
        )
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return [*warnings, *reader.warnings]
