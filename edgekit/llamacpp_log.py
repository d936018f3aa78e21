"""llama.cpp's log in one place: one ctypes callback for the process, routed to one Python handler.

llama.cpp prints every log line to stderr unless it is given a callback (llama_log_set). Each
user (the runner's error lines, the converter's quantization progress, plan's dry run) routes
the log to its own handler through route_llama_log. The ctypes callback object is created once
and kept in `_LOG` for the life of the process: ctypes frees a callback nothing references, and
the C side would then call freed memory.
"""

from __future__ import annotations

import ctypes
from typing import Callable

GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_CONT = 4, 5  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5

LogHandler = Callable[[int, bytes], None]

_LOG: dict = {"callback": None, "handler": None}


def _on_log(level, text, _user) -> None:
    handler = _LOG["handler"]
    try:
        if handler is not None:
            handler(level, text or b"")
    except Exception:  # never raise into C
        pass


def route_llama_log(handler: LogHandler) -> None:
    """From now on, hand each line llama.cpp logs to `handler(level, text)` (ggml's level, the raw
    bytes) instead of printing it; replaces the handler set before. A handler's exceptions are
    dropped (they must not reach C)."""
    import llama_cpp

    if _LOG["callback"] is None:
        _LOG["callback"] = llama_cpp.llama_log_callback(_on_log)
    _LOG["handler"] = handler
    llama_cpp.llama_log_set(_LOG["callback"], ctypes.c_void_p(0))
