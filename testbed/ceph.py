"""A real S3 server with Object Lock for tests: Ceph's RADOS gateway on loopback.

One monitor, one in-memory OSD (memstore) and radosgw, started by hand (no systemd),
from Debian's ceph-mon, ceph-osd and radosgw packages; about 15 s on two cores.
Authentication inside the cluster is off; radosgw then needs
``ms_mon_client_mode = crc secure`` or it hangs for 300 s and exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.ports import free_ports

NEEDED = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str


def available() -> bool:
    return all(shutil.which(t) for t in NEEDED)


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=120)


def _conf(d: Path, fsid: str, port: int, mon_v2: int, mon_v1: int) -> str:
    return f"""[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc secure
ms_bind_ipv6 = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_objectstore = memstore
memstore_device_bytes = 1073741824
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
log_file = {d}/log/$name.log
pid_file = {d}/run/$name.pid
[mon.a]
mon_data = {d}/mon.a
public_addr = 127.0.0.1
[osd.0]
osd_data = {d}/osd.0
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:{port}
rgw_data = {d}/rgw.a
"""


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError(f"ceph: {what} not ready after {timeout:.0f}s")


@contextlib.contextmanager
def ceph_rgw(directory: Path) -> Iterator[S3Server]:
    """Start the cluster in ``directory`` on free loopback ports (two test runs at once
    do not collide); stop every daemon by pid on exit."""
    port, mon_v2, mon_v1 = free_ports(3)
    d = directory
    shutil.rmtree(d, ignore_errors=True)
    for sub in ("run", "log", "mon.a", "osd.0", "rgw.a"):
        (d / sub).mkdir(parents=True)
    fsid = str(uuid.uuid4())
    conf = d / "ceph.conf"
    conf.write_text(_conf(d, fsid, port, mon_v2, mon_v1))
    c = ("-c", str(conf))
    access, secret = "AUDITKEY0000000000", "auditsecret" + "0" * 29
    try:
        _run(
            "ceph-authtool",
            "--create-keyring",
            "mon.keyring",
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
            cwd=d,
        )
        _run(
            "monmaptool",
            "--create",
            "--addv",
            "a",
            f"[v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]",
            "--fsid",
            fsid,
            "monmap",
            cwd=d,
        )
        _run(
            "ceph-mon",
            *c,
            "--mkfs",
            "-i",
            "a",
            "--monmap",
            "monmap",
            "--keyring",
            "mon.keyring",
            cwd=d,
        )
        _run("ceph-mon", *c, "-i", "a", cwd=d)
        _run("ceph", *c, "osd", "create", cwd=d)
        _run("ceph-osd", *c, "-i", "0", "--mkfs", cwd=d)
        _run("ceph-osd", *c, "-i", "0", cwd=d)

        def osd_up() -> bool:
            out = subprocess.run(
                ["ceph", *c, "osd", "stat"], capture_output=True, text=True, check=False, timeout=30
            )
            return "1 up" in out.stdout

        _wait(osd_up, 60, "osd")
        _run("radosgw", *c, "-n", "client.rgw.a", cwd=d)

        def rgw_up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True

        _wait(rgw_up, 60, "radosgw")
        _run(
            "radosgw-admin",
            *c,
            "user",
            "create",
            "--uid=audit",
            "--display-name=audit",
            f"--access-key={access}",
            f"--secret={secret}",
            cwd=d,
        )
        yield S3Server(f"http://127.0.0.1:{port}", access, secret)
    finally:
        for pid_file in (d / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
