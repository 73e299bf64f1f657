"""rtpengine's ng control protocol: the wire format (``protocol.py``), pure; the socket is the shell's."""
