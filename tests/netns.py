"""A faithful NAT-gateway idle-timeout emulation in network namespaces (used by tests and bench).

Topology, all of it private to three namespaces created per run (unique names)::

    client ns 10.231.1.2 --veth-- 10.231.1.1 natgw ns 10.231.2.1 --veth-- 10.231.2.2 server ns

The natgw namespace forwards and masquerades (nftables), like an AWS NAT Gateway. Its conntrack
forgets an established TCP flow after ``conntrack_timeout`` seconds (the stand-in for the 350 s of
NAT Gateways, interface VPC endpoints and NLBs), ``nf_conntrack_tcp_loose=0`` stops it from adopting
a mid-stream packet as a new flow, and packets of a forgotten flow (ct state invalid) are dropped
silently -- or, towards :data:`RST_PORT`, answered with a TCP reset (the variant some middleboxes
show). The server namespace has no route back to the client subnet, so every packet really goes
through the NAT. The addresses exist only inside the namespaces; nothing leaves this machine.

The server (``natgw_server.py``: :class:`bedrock_hooks.testing.BedrockServer` on both ports) and the
clients (``natgw_client.py``) run as subprocesses under ``ip netns exec``, so each gets the
namespace's own TCP stack and sysctls (e.g. ``tcp_keepalive_time`` = 7200 s, as on a fresh host).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLIENT_SCRIPT = HERE / "natgw_client.py"
SERVER_SCRIPT = HERE / "natgw_server.py"

CLIENT_IP, NAT_INSIDE_IP, NAT_OUTSIDE_IP, SERVER_IP = "10.231.1.2", "10.231.1.1", "10.231.2.1", "10.231.2.2"
DROP_PORT = 8080  #: forgotten flows to this port are silently dropped
RST_PORT = 8081  #: forgotten flows to this port are answered with a TCP reset

_RULES = """\
table ip bedrock_hooks_natgw {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "vn1" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state invalid tcp dport {rst_port} reject with tcp reset
    ct state invalid drop
  }}
}}
"""


def unavailable_reason() -> str | None:
    """Why the emulation cannot run here (None: it can): needs root, ``ip`` and ``nft``."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"'{tool}' not found: apt-get install -y {package}"
    probe = f"bhprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")


def child_env() -> dict[str, str]:
    """The environment of the namespaced Python processes: this repo importable, no stray config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEDROCK_HOOKS_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NatGateway:
    """Context manager: three namespaces, the NAT rules and a BedrockServer; all removed on exit.

    ``conntrack_timeout`` seconds of idleness make the gateway forget a flow. Use :meth:`url` for the
    client's endpoint and :meth:`run_clients` to run ``natgw_client.py`` scenarios in the client
    namespace (in parallel: each scenario is its own process with its own connections).
    """

    def __init__(self, conntrack_timeout: int = 3) -> None:
        self.conntrack_timeout = conntrack_timeout
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.client_ns, self.nat_ns, self.server_ns = (f"bh{tag}{role}" for role in "cns")
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []

    def __enter__(self) -> NatGateway:
        try:
            self._build()
            self._start_server()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, mode: str = "drop") -> str:
        """The Bedrock endpoint as seen from the client namespace; ``mode`` "drop" or "rst"."""
        return f"http://{SERVER_IP}:{RST_PORT if mode == 'rst' else DROP_PORT}"

    # -- building the network ---------------------------------------------------------------------
    def _build(self) -> None:
        for ns in (self.client_ns, self.nat_ns, self.server_ns):
            _run("ip", "netns", "add", ns)
            self._namespaces.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "add", "vc0", "netns", self.client_ns, "type", "veth", "peer", "name", "vn0",
             "netns", self.nat_ns)
        _run("ip", "link", "add", "vs0", "netns", self.server_ns, "type", "veth", "peer", "name", "vn1",
             "netns", self.nat_ns)
        for ns, dev, address in ((self.client_ns, "vc0", CLIENT_IP), (self.nat_ns, "vn0", NAT_INSIDE_IP),
                                 (self.nat_ns, "vn1", NAT_OUTSIDE_IP), (self.server_ns, "vs0", SERVER_IP)):
            _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", self.client_ns, "route", "add", "default", "via", NAT_INSIDE_IP)
        self._sysctl(self.nat_ns, "net/ipv4/ip_forward", 1)
        nft = subprocess.run(["ip", "netns", "exec", self.nat_ns, "nft", "-f", "-"], capture_output=True,
                             text=True, timeout=20, input=_RULES.format(rst_port=RST_PORT))
        if nft.returncode != 0:
            raise RuntimeError(f"nft failed: {nft.stderr.strip()}")
        # The conntrack sysctls exist in a namespace once its ruleset uses conntrack (above).
        self._sysctl(self.nat_ns, "net/netfilter/nf_conntrack_tcp_timeout_established", self.conntrack_timeout)
        self._sysctl(self.nat_ns, "net/netfilter/nf_conntrack_tcp_loose", 0)

    @staticmethod
    def _sysctl(ns: str, key: str, value: int) -> None:
        _run("ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > /proc/sys/{key}")

    def _start_server(self) -> None:
        proc = self._spawn(self.server_ns, [str(SERVER_SCRIPT), SERVER_IP, str(DROP_PORT), str(RST_PORT)])
        line = _readline(proc, timeout=15)
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}")

    def _spawn(self, ns: str, args: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        self._processes.append(proc)
        return proc

    # -- clients ----------------------------------------------------------------------------------
    def run_clients(self, runs: list[list[str]], timeout: float = 45.0) -> list[dict[str, Any]]:
        """Run one ``natgw_client.py`` per argument list, in parallel; their JSON results in order."""
        procs = [self._spawn(self.client_ns, [str(CLIENT_SCRIPT), *args]) for args in runs]
        deadline = time.monotonic() + timeout
        results = []
        for args, proc in zip(runs, procs):
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                raise RuntimeError(f"client {args} timed out; stderr: {err[-2000:]}") from None
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"client {args} failed ({proc.returncode}): {err[-2000:]}")
            results.append(json.loads(lines[-1]))
        return results

    # -- teardown ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process this object started, then delete its namespaces; never raises."""
        for proc in self._processes:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=5)
            except Exception:
                pass
        self._processes.clear()
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self._namespaces.clear()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().strip()
