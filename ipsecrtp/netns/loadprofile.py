"""A controller's profile in a load run (``bench load --profile``): py-spy's raw samples, per
thread, as shares idle, waiting for charon (VICI), on a lock of ours, and running, with the
operations that took most of each thread's time."""

from __future__ import annotations


def _frame(f: str) -> tuple[str, str]:
    """'Charon.load_peer (ipsecrtp/keying/strongswan.py:147)' -> ('Charon.load_peer', 'ipsecrtp/...')."""
    name, _, where = f.partition(" (")
    return name, where.rstrip(")")


# native frames of a thread that is blocked: select/poll on sockets, sleeping, waiting on a lock or condition
_BLOCKED = ("select", "poll", "nanosleep", "futex", "cond_wait", "cond_timedwait", "sem_wait", "sem_timedwait",
            "acquire")


def _wait_kind(frames: list[tuple[str, str]]) -> str:
    """What a sampled stack (py-spy ``--native``) is doing: in VICI (waiting for charon's reply, or
    for the listener its next event), on a lock of ours (contention), idle (blocked with nothing to
    do: an empty queue, select, a sleep), or running."""
    if any(where.startswith("vici/protocol.py") for _n, where in frames):
        return "charon"
    native = [name for name, where in frames if ".py:" not in where]
    if any(b in name for name in native for b in _BLOCKED):
        py = [where for _n, where in frames if ".py:" in where]
        queue = any("Queue" in name for name in native)  # queue.SimpleQueue.get is C: waiting for work
        if py and py[-1].startswith("ipsecrtp/") and not queue and any("acquire" in name for name in native):
            return "lock"  # blocked on a lock our own code takes (``with lock:``): contention, not idleness
        return "idle"
    return "running"


def profile_summary(path: str, top: int = 6) -> dict:
    """Where each of a controller's threads spends its time, from py-spy ``record --format raw --idle
    --threads --native`` (one ``thread (tid): name;frame;... count`` line per distinct stack). Per thread:
    the shares idle, waiting for charon and running, and the operations that took most of it: the
    deepest frame of this project's code on the stack (whatever it waited for counts as its time)."""
    per: dict[str, dict] = {}
    try:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not stack or not n.isdigit():
                    continue
                head, *rest = stack.split(";")
                thread = head.split(": ", 1)[1] if ": " in head else head
                frames = [_frame(x) for x in rest] or [("?", "")]
                # the entry points (python -m, the CLI) are on every main-thread stack: not an operation
                ours = [name for name, where in frames if where.startswith("ipsecrtp/")
                        and not where.startswith(("ipsecrtp/__main__.py", "ipsecrtp/cli/"))]
                t = per.setdefault(thread, {"samples": 0, "idle": 0, "charon": 0, "lock": 0, "running": 0, "ops": {}})
                count = int(n)
                t["samples"] += count
                t[_wait_kind(frames)] += count
                py = [name for name, where in frames if ".py:" in where]
                op = ours[-1] if ours else (py[-1] if py else frames[-1][0])
                t["ops"][op] = t["ops"].get(op, 0) + count
    except OSError:
        return {}
    out = {}
    for thread, t in sorted(per.items(), key=lambda kv: -kv[1]["samples"]):
        n = t["samples"]
        out[thread] = {"samples": n, **{k: round(100.0 * t[k] / n, 1) for k in ("idle", "charon", "lock", "running")},
                       "top": [{"in": op, "pct": round(100.0 * c / n, 1)}
                               for op, c in sorted(t["ops"].items(), key=lambda kv: -kv[1])[:top]]}
    return out


def format_profile(profiles: dict[str, dict]) -> str:
    lines = []
    for role, threads in profiles.items():
        lines.append(f"{role} controller, per thread (py-spy samples from the first call to the end of the run; "
                     "% of that thread's time):")
        for name, t in threads.items():
            lines.append(f"  {name}: idle {t['idle']}%, in VICI {t['charon']}%, on a lock {t['lock']}%, running "
                         f"{t['running']}%; "
                         + ", ".join(f"{o['in']} {o['pct']}%" for o in t["top"]))
    return "\n".join(lines) + ("\n" if lines else "")
