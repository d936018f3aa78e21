"""Text from outside (a device over SSH, a recording, a native library) made safe to print.

A device or a recording can say anything: escape sequences that clear the screen or recolour
the terminal, bidi overrides that reorder a line, rich markup. Everything such a source says
goes through `printable` before it reaches the terminal; JSON output escapes it on its own.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


def printable(text: Any, limit: int = 400) -> str:
    """`text` as one printable line: terminal escape sequences removed, other control and format
    characters (C0/C1, bidi overrides, NUL) dropped, whitespace runs folded to one space, at most
    `limit` characters (an ellipsis marks a cut)."""
    s = _ESCAPES.sub("", str(text if text is not None else ""))
    s = "".join(" " if ch in "\t\n\r\v\f" else ch for ch in s
                if ch in "\t\n\r\v\f" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 1] + "…"
