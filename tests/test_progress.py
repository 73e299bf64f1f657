"""Progress of the long commands (issue 16): on a terminal a tqdm bar on standard error with each
step; with --json, or when standard error is not a terminal, nothing but the results. A real run of
``ipsecrtp bench wan`` (a lab without keying, two WAN settings) under a pseudo-terminal and not."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from ipsecrtp.cli.progress import Steps


def bench_wan(*extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecrtp", "bench", "wan", "--rtt", "0,20", "--probes", "5", *extra],
                          text=True, timeout=300, **kw)


def test_steps_is_silent_when_not_wanted(capsys):
    s = Steps("x", 2, enabled=False)
    s("one")
    s.close()
    assert capsys.readouterr() == ("", "")


@pytest.mark.lab
def test_a_bench_shows_progress_on_a_terminal_only():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    # stderr a pseudo-terminal, stdout a pipe: the bar goes to the terminal, the table to the pipe
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a new pty is 0 columns wide
    try:
        p = bench_wan(stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert p.returncode == 0, p.stdout
    tty = seen.decode(errors="replace")
    assert "bench wan" in tty and "3/3" in tty and "RTT 20 ms" in tty, tty[-500:]
    assert "bench wan" not in p.stdout and "ping avg" in p.stdout
    piped = bench_wan("--json", capture_output=True)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    plain = bench_wan(capture_output=True)  # not a terminal: no bar
    assert plain.returncode == 0 and plain.stderr == "" and "ping avg" in plain.stdout, plain.stderr
