"""Framing SIP messages out of a TCP byte stream (RFC 3261 §18.3): where one message ends.

Pure, like the parser: bytes in, each message's bytes (or a framing error) out. Whatever the
stream carries, what a framer holds stays under the message cap (:mod:`.limits`).
"""

from __future__ import annotations

import re

from .errors import CapExceeded, SipParseError
from .limits import DEFAULT_LIMITS

# ten digits at most: longer is beyond any cap (and int() of thousands of digits raises ValueError)
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d{1,10})[ \t]*\r?$")
_CRLFS = re.compile(rb"(?:\r\n)*")


def find_header_end(data: bytes | bytearray) -> int:
    """Index just past the blank line ending the header block, or -1."""
    i = data.find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    i = data.find(b"\n\n")  # bare LF is tolerated on input (RFC 3261 §7.5 robustness)
    return i + 2 if i >= 0 else -1


class StreamFramer:
    """Frames SIP messages out of one direction of a TCP connection (RFC 3261 §18.3).

    Feed it in-order bytes; it yields complete messages' bytes and keeps the rest. A message longer
    than ``max_message`` is skipped as its bytes arrive (never buffered), so framing stays in step.
    """

    def __init__(self, max_message: int = DEFAULT_LIMITS.max_message_bytes) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._skip = 0  # bytes of a message beyond the cap still to come

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _too_long(self, what: str) -> CapExceeded:
        return CapExceeded("message-bytes", self.max_message,
                           f"{what} on a stream, more than max_message_bytes {self.max_message}; skipped")

    def feed(self, data: bytes) -> list[bytes | SipParseError]:
        if self._skip:
            n = min(self._skip, len(data))
            self._skip, data = self._skip - n, data[n:]
        self._buf += data
        out: list[bytes | SipParseError] = []
        while True:
            # keep-alive CRLFs between messages, dropped in one step (a run of them costs one pass)
            lead = _CRLFS.match(self._buf).end()  # type: ignore[union-attr]  # (?:...)* always matches
            if lead:
                del self._buf[:lead]
            if not self._buf:
                break
            end = find_header_end(self._buf[:self.max_message])
            if end < 0:
                if len(self._buf) > self.max_message:
                    out.append(self._too_long(f"a header block of more than {self.max_message} bytes"))
                    self._buf.clear()  # where this message ends is unknown: start again with the next bytes
                break
            m = _CONTENT_LENGTH.search(self._buf[:end])
            if not m:
                out.append(SipParseError("missing Content-Length on a stream transport; buffer dropped"))
                self._buf.clear()
                break
            total = end + int(m.group(1))
            if total > self.max_message:
                out.append(self._too_long(f"a message of {total} bytes"))
                n = min(total, len(self._buf))
                del self._buf[:n]
                self._skip = total - n
                continue
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out
