"""A classic BPF program that keeps SIP (UDP or TCP on the configured ports) on its own capture
socket, so that media, however much of it, can never fill the buffer signalling is read from.

Assembled here rather than compiled by libpcap at run time: a dozen instructions over a fixed
layout (AF_PACKET SOCK_DGRAM: the packet starts at its IP header), and the gateway then needs no
libpcap. Jump offsets are computed from labels (hand-counted offsets are easy to get wrong) and a
test runs the programs in the kernel. IPv6 extension headers are not walked; later IPv4 fragments
carry no ports: such packets go to the other socket, where the controller still sees them.
"""

from __future__ import annotations

import ctypes
import socket
import struct

# opcodes (linux/filter.h)
LD_B_ABS, LD_H_ABS, LD_H_IND, LDX_B_MSH, LDX_IMM = 0x30, 0x28, 0x48, 0xB1, 0x01
JA, JEQ_K, JSET_K, RSH_K, RET_K = 0x05, 0x15, 0x45, 0x74, 0x06
SO_ATTACH_FILTER = 26
ACCEPT, REJECT = 0x40000, 0  # RET k: how many bytes to keep (0: the packet is not for this socket)

Ins = tuple[int, int, int, int]


class _Assembler:
    def __init__(self) -> None:
        self.prog: list[list] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.prog)

    def emit(self, code: int, k: int = 0, jt: str = "", jf: str = "") -> None:
        self.prog.append([code, jt, jf, k])

    def _off(self, at: int, name: str) -> int:
        d = self.labels[name] - at - 1 if name else 0
        assert 0 <= d < 256, "BPF jumps go forward, at most 255 instructions"
        return d

    def assemble(self) -> list[Ins]:
        out = []
        for at, (code, jt, jf, k) in enumerate(self.prog):
            if code == JA:
                out.append((code, 0, 0, self._off(at, jt)))
            else:
                out.append((code, self._off(at, jt), self._off(at, jf), k))
        return out


def sip_program(ports: list[int], want_sip: bool) -> list[Ins]:
    """Accept packets to or from ``ports`` (want_sip), or every other packet (not want_sip)."""
    yes, no = (ACCEPT, REJECT) if want_sip else (REJECT, ACCEPT)
    a = _Assembler()
    a.emit(LD_B_ABS, 0)
    a.emit(RSH_K, 4)
    a.emit(JEQ_K, 4, jt="v4", jf="v6")
    a.label("v4")
    a.emit(LD_B_ABS, 9)  # protocol
    a.emit(JEQ_K, 17, jt="v4ok", jf="v4tcp")
    a.label("v4tcp")
    a.emit(JEQ_K, 6, jt="v4ok", jf="no")
    a.label("v4ok")
    a.emit(LD_H_ABS, 6)  # flags and fragment offset
    a.emit(JSET_K, 0x1FFF, jt="no", jf="v4x")
    a.label("v4x")
    a.emit(LDX_B_MSH, 0)  # X = IHL * 4: where UDP/TCP starts
    a.emit(JA, jt="ports")
    a.label("v6")
    a.emit(JEQ_K, 6, jt="v6ok", jf="no")
    a.label("v6ok")
    a.emit(LD_B_ABS, 6)  # next header
    a.emit(JEQ_K, 17, jt="v6x", jf="v6tcp")
    a.label("v6tcp")
    a.emit(JEQ_K, 6, jt="v6x", jf="no")
    a.label("v6x")
    a.emit(LDX_IMM, 40)
    a.label("ports")
    for field, offset in (("s", 0), ("d", 2)):
        a.emit(LD_H_IND, offset)
        for p in ports:
            a.emit(JEQ_K, p, jt="match", jf=f"{field}{p}")
            a.label(f"{field}{p}")
    a.label("no")
    a.emit(RET_K, no)
    a.label("match")
    a.emit(RET_K, yes)
    return a.assemble()


def attach(sock: socket.socket, prog: list[Ins]) -> None:
    raw = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(prog), ctypes.addressof(raw))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    del raw  # the kernel copied the program
