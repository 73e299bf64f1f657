"""A call's ladder diagram as SVG (``ipsecrtp report CALL --svg FILE``), drawn with drawsvg.

What sngrep and Homer show for SIP, extended to the keying: one lane per gateway, each message an
arrow from the gateway that saw it first to the one that saw it later (SIP, and each IKE packet
with its retransmissions; an IKE packet only one side saw ends in a cross), the CHILD_SA installed,
the first RTP in clear and the first ESP, the BYE, the SA removed. Time runs down: each instant
gets a row of its own (a call spends milliseconds keying and seconds talking, so a linear axis
would hide the keying), labelled with its time after the INVITE. Shaded on each lane: the
post-answer gap (2xx to CHILD_SA installed), and beside it the budget's allowed gap.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

import drawsvg as draw

from .timing import BUDGETS

SIP_MARKS = [("invite", "INVITE"), ("first_provisional", "first provisional"), ("first_18x", "18x"),
             ("final", "final response"), ("ack", "ACK"), ("bye", "BYE"), ("bye_response", "BYE answered")]
LANE_MARKS = [("keying_started", "keying started"), ("sa_up", "CHILD_SA installed"),
              ("first_rtp", "first RTP in clear"), ("first_esp", "first ESP"), ("ended", "dialog ended"),
              ("sa_down", "CHILD_SA removed")]
ROW = 22  # pixels per instant
TOP, LEFT, LANE_GAP, WIDTH = 70, 110, 420, 900


def ike_label(p: dict) -> str:
    return f"IKE {p['exchange']} {'response' if p['response'] else 'request'}"


def _messages(tls: list[dict]) -> list[dict]:
    """Arrows: {label, from lane, t_from, to lane or None, t_to}. Two lanes: a message both saw goes
    from the earlier sighting to the later; IKE packets pair up by exchange and message id, the
    k-th sighting on one side with the k-th on the other (retransmissions are extra sightings)."""
    out = []
    for key, label in SIP_MARKS:
        seen = [(tl[key], i) for i, tl in enumerate(tls) if tl.get(key) is not None]
        if not seen or (key == "first_provisional" and all(tl.get(key) == tl.get("first_18x") for tl in tls)):
            continue  # the first provisional was the 18x itself (no 100 Trying crossed the WAN)
        seen.sort()
        if key == "final":
            label = f"{label} {tls[seen[0][1]].get('final_status') or ''}".strip()
        (t0, a), rest = seen[0], seen[1:]
        out.append({"label": label, "from": a, "t_from": t0, "to": rest[0][1] if rest else None,
                    "t_to": rest[0][0] if rest else None})
    by_key: dict[tuple, list[list[float]]] = defaultdict(lambda: [[] for _ in tls])
    labels = {}
    for i, tl in enumerate(tls):
        for p in tl.get("ike", []):
            k = (p["spi_i"], p["msgid"], p["initiator"], p["response"])
            by_key[k][i].append(p["time"])
            labels[k] = ike_label(p)
    for k, sightings in by_key.items():
        for times in sightings:
            times.sort()
        n = max(len(s) for s in sightings)
        for j in range(n):
            seen = sorted((s[j], i) for i, s in enumerate(sightings) if j < len(s))
            # the sender sees it leave first; with more sightings on the sender than on the receiver,
            # the extra ones are retransmissions that did not arrive (or arrived as a duplicate)
            (t0, a), rest = seen[0], seen[1:]
            out.append({"label": labels[k] + (f" (retransmission {j})" if j else ""), "from": a, "t_from": t0,
                        "to": rest[0][1] if rest else None, "t_to": rest[0][0] if rest else None})
    return out


class _Rows:
    """Each distinct instant its own row; any time in between placed between its neighbours."""

    def __init__(self, times: list[float]) -> None:
        self.times = sorted(set(times))

    def y(self, t: float) -> float:
        i = bisect.bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            return TOP + i * ROW
        if i == 0:
            return TOP
        if i == len(self.times):
            return TOP + (len(self.times) - 1) * ROW
        a, b = self.times[i - 1], self.times[i]
        return TOP + (i - 1 + (t - a) / (b - a)) * ROW


def ladder(tls: list[dict]) -> draw.Drawing:
    """The drawing for one call's logged timelines (one per gateway that saw it)."""
    tls = sorted(tls, key=lambda tl: (tl.get("invite") is None, tl.get("invite") or 0, tl.get("gateway", "")))
    t0 = min((tl["invite"] for tl in tls if tl.get("invite") is not None), default=0.0)
    msgs = _messages(tls)
    times = [m["t_from"] for m in msgs] + [m["t_to"] for m in msgs if m["t_to"] is not None]
    times += [tl[k] for tl in tls for k, _ in LANE_MARKS if tl.get(k) is not None]
    rows = _Rows(times or [t0])
    height = TOP + len(rows.times) * ROW + 60
    d = draw.Drawing(WIDTH, height, font_family="sans-serif", font_size=11)
    d.append(draw.Rectangle(0, 0, WIDTH, height, fill="white"))
    d.append(draw.Text(f"call {tls[0].get('call', '?')}", 14, 10, 20, font_weight="bold"))
    x = [LEFT + 60 + i * LANE_GAP for i in range(len(tls))]
    bottom = TOP + (len(rows.times) - 1) * ROW + 10
    for i, tl in enumerate(tls):
        _shade(d, tl, x[i], rows)
        d.append(draw.Text(f"{tl.get('gateway') or '?'} ({tl.get('role') or 'unkeyed'}, "
                           f"{tl.get('strategy') or '-'})", 12, x[i], 48, text_anchor="middle", font_weight="bold"))
        d.append(draw.Line(x[i], 56, x[i], bottom, stroke="black", stroke_width=1.5))
    for t in rows.times:
        d.append(draw.Text(f"{(t - t0) * 1000:9.1f} ms", 10, 8, rows.y(t) + 3, fill="#555"))
    arrow = draw.Marker(-0.1, -0.5, 0.9, 0.5, scale=6, orient="auto")
    arrow.append(draw.Lines(-0.1, -0.5, -0.1, 0.5, 0.9, 0, fill="black", close=True))
    for m in msgs:
        _message(d, m, x, rows, arrow)
    for i, tl in enumerate(tls):
        for key, label in LANE_MARKS:
            if tl.get(key) is not None:
                y = rows.y(tl[key])
                d.append(draw.Circle(x[i], y, 4, fill="#1a7f37" if key in ("sa_up", "first_esp") else "#b35900"))
                d.append(draw.Text(label, 10, x[i] + (8 if i == len(tls) - 1 else -8), y + 3,
                                   text_anchor="start" if i == len(tls) - 1 else "end"))
    m = tls[0].get("metrics", {})
    d.append(draw.Text(f"post-answer gap {m.get('post_answer_gap_ms')} ms, {m.get('clear_rtp_after_answer')} "
                       f"RTP/RTCP in clear after the answer; shaded: the gap (red) and the budget's allowed gap "
                       f"(green)", 10, 10, height - 20))
    return d


def _shade(d: draw.Drawing, tl: dict, x: float, rows: _Rows) -> None:
    """The post-answer gap on this lane, and the budget's allowed gap beside it."""
    final, up = tl.get("final"), tl.get("sa_up")
    if final is None or not (tl.get("final_status") or 0) < 300:
        return
    budget = BUDGETS.get((tl.get("verdict") or {}).get("budget", "e721-toll"))
    if budget is not None:
        y0, y1 = rows.y(final), rows.y(final + budget.gap_ms / 1000)
        d.append(draw.Rectangle(x + 6, y0, 10, max(2.0, y1 - y0), fill="#2da44e", fill_opacity=0.25))
    if up is not None and up > final:
        y0, y1 = rows.y(final), rows.y(up)
        d.append(draw.Rectangle(x - 16, y0, 10, max(2.0, y1 - y0), fill="#cf222e", fill_opacity=0.3))


def _message(d: draw.Drawing, m: dict, x: list[float], rows: _Rows, arrow: draw.Marker) -> None:
    x0, y0 = x[m["from"]], rows.y(m["t_from"])
    ike = m["label"].startswith("IKE")
    color = "#0550ae" if ike else "black"
    if m["to"] is None:  # seen on one side only: lost on the way, or a lane-less single gateway
        other = x[1 - m["from"]] if len(x) == 2 else x0 + 150
        x1 = (x0 + other) / 2
        d.append(draw.Line(x0, y0, x1, y0, stroke=color, stroke_dasharray="4,3"))
        d.append(draw.Text("x", 12, x1 + 2, y0 + 4, fill="#cf222e"))
        d.append(draw.Text(m["label"], 10, (x0 + x1) / 2, y0 - 4, text_anchor="middle", fill=color))
        return
    x1, y1 = x[m["to"]], rows.y(m["t_to"])
    d.append(draw.Line(x0, y0, x1 - (6 if x1 > x0 else -6), y1, stroke=color, stroke_width=1.2, marker_end=arrow))
    d.append(draw.Text(f"{m['label']}  {(m['t_to'] - m['t_from']) * 1000:.1f} ms", 10, (x0 + x1) / 2,
                       (y0 + y1) / 2 - 4, text_anchor="middle", fill=color))


def write_svg(tls: list[dict], path: str) -> list[str]:
    """Write the ladder; returns the labels of every message drawn (what the picture names)."""
    ladder(tls).save_svg(path)
    return [m["label"] for m in _messages(tls)] + [label for tl in tls for k, label in LANE_MARKS if tl.get(k)]
