"""The error of SIP syntax, in a module of its own so that both the message parser and the
header-value grammar it calls (:mod:`.headers`) raise it without importing each other."""


class SipParseError(ValueError):
    """A message that is not valid SIP; ``str(err)`` is a one-line reason."""


class Capped:
    """Mixin of the errors an input raises by going beyond a configured cap (:mod:`.limits`): ``cap``
    names which one (a small fixed set, so that a metric can carry it as a label), ``limit`` its value."""

    def __init__(self, cap: str, limit: int, detail: str) -> None:
        super().__init__(detail)
        self.cap, self.limit = cap, limit


class CapExceeded(Capped, SipParseError):
    """A message (or TCP stream) beyond a cap: dropped before the work it would have cost."""
