"""Rules for free text a caller sends and others are shown: names, questions, remarks.

Such text must not carry characters that change how text around it is displayed or
parsed: controls (Cc: NUL, escape sequences for a terminal, newlines in a one-line
field), format characters (Cf: the bidi overrides and isolates U+202A-U+202E and
U+2066-U+2069 that make "exe.txt" read as "txt.exe", zero-width characters that make two
names look the same), line and paragraph separators (Zl, Zp) and lone surrogates (Cs).
`plain_text` puts the rule on a msgspec field, so a request breaking it is refused as it
is decoded (``bad_request``, saying which field).
"""

from __future__ import annotations

import re

import msgspec

# Every Cc, Cf, Cs, Zl and Zp code point as of Unicode 15.0 (tests/unit/test_text.py checks
# this list against the running Python's unicodedata). Ranges, both ends included.
UNSAFE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605),
    (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891),
    (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x2028, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)
_UNSAFE = "".join(rf"\U{lo:08x}-\U{hi:08x}" for lo, hi in UNSAFE_RANGES)
# \A and \Z, not ^ and $: "$" also matches before a final newline.
PLAIN_TEXT = rf"\A[^{_UNSAFE}]*\Z"
_NOT_BLANK = r"(?=.*\S)"  # after \A: some character other than white space
_plain = re.compile(PLAIN_TEXT)


def plain_text(*, max_length: int, min_length: int = 0, blank: bool = True) -> msgspec.Meta:
    """A free-text field's constraints: its length, no unsafe characters (see above), and
    with ``blank=False`` more than white space. Use as ``Annotated[str, plain_text(...)]``."""
    pattern = PLAIN_TEXT if blank else rf"\A{_NOT_BLANK}{PLAIN_TEXT[2:]}"
    return msgspec.Meta(min_length=min_length, max_length=max_length, pattern=pattern)


def is_plain(text: str) -> bool:
    """Whether ``text`` has none of the unsafe characters (for text outside a contract)."""
    return _plain.match(text) is not None
