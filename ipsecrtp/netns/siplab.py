"""A SIP lab for capturing real dialogs: kamailio as proxy/registrar, baresip and sipp as user agents.

Two namespaces: ``sp`` holds the proxy (198.51.100.1, 2001:db8::1), ``su`` the user agents (each on
its own documentation address), joined by one veth; every SIP message crosses the proxy's ``lan0``
where dumpcap writes a pcapng. The scenarios cover what the dialog core must read from real
implementations: UDP and TCP, IPv4 and IPv6, proxying with record-routing, forking with a cancelled
branch, reliable provisionals with PRACK, session timers, hold by re-INVITE, UPDATE, late offer,
rejection. The same state file and ``down`` as the gateway lab: processes by pid, only our namespaces.
"""

from __future__ import annotations

import glob
import os
import shutil
import time

from . import proc
from .baresip import BaresipControl, write_config
from .lab import Lab
from .labstate import LabError

SIPP_DIR = os.path.join(os.path.dirname(__file__), "sipp")
PROXY4, PROXY6 = "198.51.100.1", "2001:db8::1"
AGENTS4 = {"alice": "198.51.100.10", "carol": "198.51.100.11", "bob": "198.51.100.20", "fork": "198.51.100.21",
           "uac": "198.51.100.30", "uas": "198.51.100.31"}
AGENTS6 = {"uac": "2001:db8::30", "uas": "2001:db8::31"}

KAMAILIO_CFG = """\
#!KAMAILIO
debug=1
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:{p4}:5060
listen=tcp:{p4}:5060
listen=udp:[{p6}]:5060
listen=tcp:[{p6}]:5060
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
modparam("usrloc", "db_mode", 0)
modparam("rr", "enable_double_rr", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{ save("location"); exit; }}
    if (is_method("INVITE")) {{ record_route(); }}
    if (uri != myself) {{ t_relay(); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""


def sipp_scenario(name: str) -> str:
    return os.path.join(SIPP_DIR, name + ".xml")


class SipLab(Lab):
    """Proxy + agents; ``run_all()`` plays every scenario and leaves one pcapng of the SIP."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.capture_path = os.path.join(self.dir, "sip.pcapng")

    @property
    def proxy_ns(self) -> str:
        return self.ns("sp")

    @property
    def agents_ns(self) -> str:
        return self.ns("su")

    def up(self, media_timeout: float = 30.0) -> None:  # noqa: ARG002 - same signature as Lab.up
        if os.geteuid() != 0:
            raise LabError("the SIP lab needs root (network namespaces)")
        for tool in ("kamailio", "sipp", "baresip", "dumpcap"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} not found: run scripts/setup.sh")
        if os.path.exists(self.state_path):
            raise LabError(f"lab {self.name!r} exists already ({self.state_path}): run 'ipsecrtp lab down'")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.owned = True
        self.state["kind"] = "sip"
        self.save()
        for role in ("sp", "su"):
            self.add_ns(role)
        proc.run(None, "ip", "-n", self.proxy_ns, "link", "add", "lan0", "type", "veth",
                 "peer", "name", "lan0", "netns", self.agents_ns)
        proc.run(self.proxy_ns, "ip", "addr", "add", f"{PROXY4}/24", "dev", "lan0")
        proc.run(self.proxy_ns, "ip", "addr", "add", f"{PROXY6}/64", "dev", "lan0", "nodad")
        for addr in AGENTS4.values():
            proc.run(self.agents_ns, "ip", "addr", "add", f"{addr}/24", "dev", "lan0")
        for addr in AGENTS6.values():
            proc.run(self.agents_ns, "ip", "addr", "add", f"{addr}/64", "dev", "lan0", "nodad")
        for ns in (self.proxy_ns, self.agents_ns):
            proc.run(ns, "ip", "link", "set", "lan0", "up")
        self._start_capture()
        self._start_kamailio()
        self._start_baresips()
        self.state["up_at"] = time.time()
        self.save()

    def _spawn(self, role: str, kind: str, ns: str, argv: list[str], log: str) -> tuple[int, int]:
        pid, st = proc.spawn(ns, argv, log)
        self.track(role, kind, pid, st, ns)
        return pid, st

    def _start_capture(self) -> None:
        self._spawn("sp", "dumpcap", self.proxy_ns,
                    ["dumpcap", "-q", "-i", "lan0", "-f", "port 5060", "-w", self.capture_path],
                    os.path.join(self.dir, "dumpcap.out"))
        deadline = time.monotonic() + 10
        while not os.path.exists(self.capture_path):
            if time.monotonic() > deadline:
                raise LabError("dumpcap did not start")
            time.sleep(0.05)

    def _start_kamailio(self) -> None:
        mpath = next(iter(glob.glob("/usr/lib/*/kamailio/modules/")), "/usr/lib/kamailio/modules/")
        d = os.path.join(self.dir, "kamailio")
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "kamailio.cfg")
        with open(cfg, "w") as f:
            f.write(KAMAILIO_CFG.format(p4=PROXY4, p6=PROXY6, mpath=mpath))
        self._spawn("sp", "kamailio", self.proxy_ns,
                    ["kamailio", "-DD", "-E", "-f", cfg, "-Y", d, "-P", os.path.join(d, "kamailio.pid"), "-m", "32",
                     "-M", "8"], os.path.join(d, "kamailio.out"))
        self._wait_port(self.proxy_ns, PROXY4, "kamailio")

    def _wait_port(self, ns: str, addr: str, what: str, port: int = 5060, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = proc.run(ns, "ss", "-lntu", check=False)
            if f"{addr}:{port} " in r.stdout:
                return
            time.sleep(0.1)
        raise LabError(f"{what} is not listening on {addr}:{port}")

    def _start_baresips(self) -> None:
        # alice: UDP; carol: TCP to the proxy; bob: registered, answers when told (so forks ring first)
        specs = {"alice": ("udp", 4444, "manual"), "carol": ("tcp", 4445, "manual"), "bob": ("udp", 4446, "manual")}
        for user, (transport, ctrl, answer) in specs.items():
            addr = AGENTS4[user]
            d = os.path.join(self.dir, "baresip-" + user)
            acct = (f"<sip:{user}@{PROXY4};transport={transport}>;answermode={answer};audio_codecs=PCMU;"
                    f"regint={600 if user == 'bob' else 0}")
            if user == "bob":
                acct += f";outbound=\"sip:{PROXY4};transport=udp\""
            base = 12000 + 200 * len(self.state.get("baresip", {}))
            write_config(d, addr, [acct], (base, base + 99), ctrl=ctrl)
            self._spawn("su", "baresip", self.agents_ns, ["baresip", "-f", d], os.path.join(d, "baresip.out"))
            self.state.setdefault("baresip", {})[user] = ctrl
            self.save()

    # -- scenarios ---------------------------------------------------------------------------

    def control(self, user: str) -> BaresipControl:
        return BaresipControl(self.agents_ns, port=self.state["baresip"][user])

    def _registered(self, user: str, timeout: float = 10.0) -> None:
        ctl = self.control(user)
        deadline = time.monotonic() + timeout
        try:
            while True:
                # the REGISTER_OK event may have gone before we connected: ask for the state instead
                info = ctl.command("reginfo").get("data", "")
                if "OK" in info:
                    return
                if time.monotonic() > deadline:
                    raise LabError(f"{user} did not register with the proxy: {info.strip()[:120]}")
                time.sleep(0.2)
        finally:
            ctl.close()

    def baresip_call(self, caller: str, callee: str, hangup_by: str, talk: float = 0.5,
                     ring: float = 0.3) -> None:
        """caller dials callee@proxy; the callee answers after ``ring`` s; ``hangup_by`` ends it."""
        a, b = self.control(caller), self.control(callee)
        try:
            b.events.clear()
            a.command("dial", f"sip:{callee}@{PROXY4}")
            b.wait_event({"CALL_INCOMING"}, 10)
            time.sleep(ring)
            b.command("accept")
            a.wait_event({"CALL_ESTABLISHED"}, 10)
            time.sleep(talk)
            (a if hangup_by == caller else b).command("hangup")
            for c in (a, b):
                c.wait_event({"CALL_CLOSED"}, 10)
        finally:
            a.close()
            b.close()

    def sipp(self, scenario: str, *args: str, timeout: float = 30.0, background: bool = False):
        argv = ["sipp", "-sf", sipp_scenario(scenario), "-m", "1", "-nostdin", "-timeout", f"{int(timeout)}s",
                "-timeout_error", *args]
        log = os.path.join(self.dir, f"sipp-{scenario}.out")
        if background:
            return self._spawn("su", "sipp", self.agents_ns, argv, log)
        r = proc.run(self.agents_ns, *argv, check=False)
        if r.returncode != 0:
            raise LabError(f"sipp {scenario} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}")
        return None

    def _wait_exit(self, pid: int, st: int, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while proc.alive(pid, st):
            proc.reap(pid)
            if time.monotonic() > deadline:
                raise LabError(f"{what} did not finish")
            time.sleep(0.05)

    def _sipp_pair(self, scenario: str, agents: dict[str, str], proxy: str, *uac_args: str) -> None:
        """sipp uas-SCENARIO in the background, then uac-SCENARIO calling it through the proxy."""
        def hp(addr: str) -> str:
            return f"[{addr}]" if ":" in addr else addr

        pid, st = self.sipp(f"uas-{scenario}", "-i", agents["uas"], "-p", "5060", background=True)
        self._wait_port(self.agents_ns, hp(agents["uas"]), "sipp uas")
        self.sipp(f"uac-{scenario}", f"{hp(agents['uas'])}:5060", "-rsa", f"{hp(proxy)}:5060", "-i", agents["uac"],
                  "-p", "5060", *uac_args)
        self._wait_exit(pid, st, f"sipp uas-{scenario}")

    def run_all(self) -> list[str]:
        """Play every scenario once, in a fixed order; returns their names."""
        done = []
        self._registered("bob")
        self.baresip_call("alice", "bob", hangup_by="alice")
        done.append("baresip-udp-proxied")
        self.baresip_call("carol", "bob", hangup_by="bob")
        done.append("baresip-tcp-proxied")
        # late offer, IPv4 UDP, both legs through the proxy
        self._sipp_pair("late-offer", AGENTS4, PROXY4)
        done.append("sipp-late-offer")
        # reliable 183 + PRACK, session timer, hold, UPDATE: IPv6, TCP to the proxy, UDP beyond it
        self._sipp_pair("100rel", AGENTS6, PROXY6, "-t", "t1")
        done.append("sipp-100rel-ipv6-tcp")
        self._sipp_pair("rejected", AGENTS4, PROXY4)
        done.append("sipp-rejected")
        # forking: a sipp phone registers as bob too; it rings, bob answers, the proxy cancels it
        self.sipp("register", f"{PROXY4}:5060", "-i", AGENTS4["fork"], "-p", "5060", "-s", "bob")
        pid, st = self.sipp("uas-ring", "-i", AGENTS4["fork"], "-p", "5060", background=True)
        self._wait_port(self.agents_ns, AGENTS4["fork"], "sipp fork")
        self.baresip_call("alice", "bob", hangup_by="alice", ring=1.0)
        self._wait_exit(pid, st, "sipp uas-ring")
        done.append("baresip-forked")
        return done

    def stop_capture(self) -> str:
        """Stop dumpcap (SIGTERM flushes the file) and return the capture's path."""
        for p in self.state["procs"]:
            if p["kind"] == "dumpcap":
                time.sleep(0.3)  # the last packets of the last scenario
                proc.kill(p["pid"], p["start"], grace=5.0)
        return self.capture_path
