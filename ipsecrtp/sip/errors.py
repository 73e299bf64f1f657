"""The error of SIP syntax, in a module of its own so that both the message parser and the
header-value grammar it calls (:mod:`.headers`) raise it without importing each other."""


class SipParseError(ValueError):
    """A message that is not valid SIP; ``str(err)`` is a one-line reason."""
