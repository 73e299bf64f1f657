import os
import subprocess
import sys


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ipsecrtp", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def write_cfg(tmp_path, vici: str, psk_mode=0o600, peer_extra: str = "") -> str:
    """A minimal controller config: one peer, its PSK file; ``peer_extra``: more lines of [[peer]]."""
    psk = tmp_path / "psk"
    psk.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(psk, psk_mode)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""[controller]
interfaces = ["lo"]
vici = "unix://{vici}"
[[peer]]
name = "b"
ike_local = "198.51.100.1"
ike_remote = "198.51.100.2"
local_media = ["198.51.100.1/32"]
remote_media = ["198.51.100.2/32"]
psk_file = "{psk}"
{peer_extra}
""")
    return str(cfg)


def test_run_without_charon_is_one_clear_line(tmp_path):
    r = run("run", "--config", write_cfg(tmp_path, str(tmp_path / "none.vici")))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"Error: no charon VICI socket at {tmp_path}/none.vici: "
                                             "No such file or directory"]


def test_config_errors_are_one_line(tmp_path):
    r = run("run", "--config", write_cfg(tmp_path, "/x", psk_mode=0o644))
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "readable by others" in r.stderr
    r = run("run", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode != 0 and "No such file" in r.stderr


def test_calls_offline_json(tmp_path):
    pcap = os.path.join(os.path.dirname(__file__), "data", "baresip-calls.pcap")
    r = run("calls", "--pcap", pcap, "--json")
    assert r.returncode == 0
    import json

    rep = json.loads(r.stdout)
    assert len(rep["calls"]) == 3


def test_lab_topology_errors_are_one_line_and_leave_nothing(tmp_path):
    env_dir = tmp_path / "labs"
    for args, words in ((["--topology", "phone-nat"], "needs router mode"),
                        (["--mode", "router", "--topology", "nat"], "does not combine")):
        r = subprocess.run([sys.executable, "-m", "ipsecrtp", "lab", "up", "--name", "clierr", *args],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, IPSECRTP_LAB_DIR=str(env_dir)))
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr
        assert not (env_dir / "clierr").exists()
