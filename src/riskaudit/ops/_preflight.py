"""``riskaudit check``: the pre-deployment checklist, automated, for where it runs.

The original guide's checklist was a page of manual steps, and its one automated check
looked only for tmpfs and ``/tmp``. Each check here reads a fact (mountinfo, statvfs, a
real write as the running user, ``st_dev`` of two paths, the kernel clock, a logrotate
file, an HTTP answer) and says ✓, ⚠ or ✗ with the fix from the runbook
(docs/operations.md). Any ✗ makes the command exit 1, so it can gate a deployment: the
Kubernetes example runs it as an init container.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from riskaudit.archive import BackupState
from riskaudit.clock import ClockReader, read_clock
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditError
from riskaudit.format import backup_state_path
from riskaudit.integrity import load_signer
from riskaudit.log import (
    SpaceLevel,
    check_storage,
    detect_container,
    existing_ancestor,
    probe_write,
)


class CheckStatus(StrEnum):
    """A check's outcome; any FAIL makes ``riskaudit check`` exit 1."""

    OK = "ok"
    WARNING = "warning"
    FAIL = "fail"


OK, WARN, FAIL = CheckStatus.OK, CheckStatus.WARNING, CheckStatus.FAIL
SYMBOL = {OK: "✓", WARN: "⚠", FAIL: "✗"}
DEFAULT_LOGROTATE = Path("/etc/logrotate.d/riskaudit")
#: kubelet's defaults: containerLogMaxSize 10Mi x containerLogMaxFiles 5.
KUBELET_LOG_BYTES = 5 * 10 << 20
RUNTIME_LOG_MIN = 100 << 20


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _dev(path: Path) -> int:
    return os.stat(existing_ancestor(path)).st_dev


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def check_volume(config: AuditConfig) -> list[Check]:
    """Persistent, writable, with room."""
    directory = config.log_path.absolute().parent
    report = check_storage(
        existing_ancestor(directory), in_kubernetes=config.in_kubernetes, marks=config.watermarks
    )
    out = []
    where = (
        f"{directory} on {report.mount.fstype} ({report.mount.source})"
        if report.mount
        else str(directory)
    )
    if report.volatile_reason:
        out.append(
            Check(
                "persistent volume",
                FAIL,
                f"{directory} is on {report.volatile_reason}",
                "mount a persistent volume at the log directory (Docker: a named volume or "
                "bind mount; Kubernetes: a PVC) — docs/operations.md, 'Volume not mounted'",
            )
        )
    else:
        out.append(Check("persistent volume", OK, where))
    probe_dir = existing_ancestor(directory)
    error = probe_write(probe_dir)
    user = os.getuid()
    if error is None:
        made = "" if probe_dir == directory else f" (in {probe_dir}: it creates {directory})"
        out.append(Check("write permission", OK, f"uid {user} can create, write and fsync{made}"))
    else:
        out.append(
            Check(
                "write permission",
                FAIL,
                f"uid {user} cannot write: {error}",
                "give the service user the directory (chown 1000:1000, or fsGroup in "
                "the pod), or remount it read-write — docs/operations.md, 'Permission "
                "denied'",
            )
        )
    free = report.free_bytes
    if free is None:
        out.append(Check("free space", WARN, "could not read free space"))
    elif report.space is SpaceLevel.CRITICAL:
        out.append(
            Check(
                "free space",
                FAIL,
                f"{_gib(free)} free ({report.free_percent:.1f}%): under the critical watermark",
                "grow the volume or move verified, backed-up segments off it — "
                "docs/operations.md, 'No space left on device'",
            )
        )
    elif free < config.min_free_bytes:
        out.append(
            Check(
                "free space",
                WARN,
                f"{_gib(free)} free, under RISK_AUDIT_MIN_FREE_BYTES "
                f"({_gib(config.min_free_bytes)})",
                "size the volume for a day of peak volume plus the hot tier "
                "(docs/operations.md, 'Sizing')",
            )
        )
    else:
        out.append(Check("free space", OK, f"{_gib(free)} free ({report.free_percent:.1f}%)"))
    return out


def check_spool(config: AuditConfig) -> Check:
    if config.spool_dir is None:
        return Check(
            "spool on another volume",
            WARN,
            "no spool: while the log volume fails, records go only to stdout",
            "set RISK_AUDIT_SPOOL_DIR to a directory on a second volume",
        )
    if _dev(config.spool_dir) == _dev(config.log_path.absolute().parent):
        return Check(
            "spool on another volume",
            FAIL,
            f"{config.spool_dir} is on the same file system as the log",
            "mount the spool from a different volume: a full or read-only log volume "
            "would take the spool with it",
        )
    return Check("spool on another volume", OK, f"{config.spool_dir} (a different file system)")


def check_key(config: AuditConfig) -> Check:
    key = config.signing_key_file
    if key is None:
        return Check(
            "signing key",
            WARN,
            "checkpoints are not signed: whoever can write the log can rewrite it unseen",
            "riskaudit keygen; mount the private key read-only (a Secret) and set "
            "RISK_AUDIT_SIGNING_KEY_FILE",
        )
    try:
        load_signer(key)
    except (AuditError, OSError) as exc:
        return Check("signing key", FAIL, f"{key}: {exc}", "mount a readable Ed25519 key")
    if _dev(key) == _dev(config.log_path.absolute().parent):
        return Check(
            "signing key",
            FAIL,
            f"{key} is on the log volume",
            "keep the key off the log volume (a Secret or another mount): a key next "
            "to the log lets whoever takes the volume re-sign a rewritten history",
        )
    return Check("signing key", OK, f"{key} readable, not on the log volume")


def check_backup(config: AuditConfig, now: float) -> Check:
    bk = config.backup
    if not bk.target:
        return Check(
            "backup",
            WARN,
            "no backup target: the log and its checkpoints live on one volume",
            "set AUDIT_BACKUP_ENABLED=1 and RISK_AUDIT_BACKUP_TARGET (s3://... with Object "
            "Lock) — docs/operations.md, 'Backups'",
        )
    if not bk.enabled:
        return Check(
            "backup",
            WARN,
            f"target {bk.target} set but AUDIT_BACKUP_ENABLED is off",
            "set AUDIT_BACKUP_ENABLED=1",
        )
    last = BackupState.load(backup_state_path(config.log_path.absolute())).last_success_ns
    if not last:
        return Check(
            "backup",
            WARN,
            f"enabled to {bk.target}; no backup has succeeded yet",
            "run `riskaudit backup run` once, or wait for the service's first run",
        )
    age = now - last / 1e9
    if age > 2 * bk.interval:
        # ⚠, not ✗: this check gates the pod's start (init container), and refusing to
        # start would not bring the backup back; the service retries on its schedule
        # and AuditBackupStale pages someone.
        return Check(
            "backup",
            WARN,
            f"last success {age / 3600:.1f} h ago (interval {bk.interval / 3600:g} h)",
            "see `riskaudit backup status` and the AuditBackupStale runbook",
        )
    return Check("backup", OK, f"to {bk.target}, last success {age / 60:.0f} min ago")


def check_metrics(url: str | None) -> Check | None:
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (operator's URL)
            body = resp.read(1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Check(
            "metrics endpoint",
            FAIL,
            f"{url}: {exc}",
            "check that the service runs and listens there (port 8080)",
        )
    if b"audit_events_total" not in body:
        return Check(
            "metrics endpoint",
            FAIL,
            f"{url} answers but serves no riskaudit metrics",
            "point at riskaudit's /metrics",
        )
    return Check("metrics endpoint", OK, f"{url} serves riskaudit metrics")


_COPYTRUNCATE = re.compile(r"^\s*copytruncate\b", re.M)
_ROTATE = re.compile(r"^\s*rotate\s+(-?\d+)\b", re.M)
_MAXAGE = re.compile(r"^\s*maxage\s+(\d+)\b", re.M)
_PERIOD = re.compile(r"^\s*(hourly|daily|weekly|monthly|yearly)\b", re.M)
_PERIOD_DAYS = {"hourly": 1 / 24, "daily": 1, "weekly": 7, "monthly": 28, "yearly": 365}


def logrotate_keeps_days(body: str) -> float | None:
    """How long logrotate keeps a rotated file before deleting it, in days (the shortest
    of ``rotate`` x period and ``maxage``), or None when it cannot tell (size-based,
    ``rotate -1``: kept forever). Months count as 28 days: the short case decides."""
    kept: list[float] = []
    rotate, period = _ROTATE.search(body), _PERIOD.search(body)
    if rotate is not None and int(rotate[1]) >= 0 and period is not None:
        kept.append(int(rotate[1]) * _PERIOD_DAYS[period[1]])
    maxage = _MAXAGE.search(body)
    if maxage is not None:
        kept.append(float(maxage[1]))
    return min(kept) if kept else None


def check_rotation(config: AuditConfig, logrotate_file: Path | None) -> Check:
    file = logrotate_file or (DEFAULT_LOGROTATE if DEFAULT_LOGROTATE.exists() else None)
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            return Check("rotation", FAIL, f"{file}: {exc}", "make the logrotate file readable")
        body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        if _COPYTRUNCATE.search(body):
            return Check(
                "rotation",
                FAIL,
                f"{file} uses copytruncate, which loses the records written between its "
                "copy and its truncate",
                "use create mode with `riskaudit signal reopen` in postrotate "
                "(deploy/logrotate/riskaudit) — docs/operations.md, 'Rotation'",
            )
        if config.rotation.enabled:
            return Check(
                "rotation",
                WARN,
                f"built-in rotation and {file} both configured",
                "use one of them",
            )
        kept = logrotate_keeps_days(body)
        minimum = config.retention.minimum / 86400
        if kept is not None and kept < minimum:
            where = f"logrotate deletes rotated files after {kept:g} days"
            if not (config.backup.enabled and config.backup.target):
                return Check(
                    "rotation",
                    FAIL,
                    f"{file}: {where}, before the {minimum:g}-day retention minimum, and no "
                    "backup keeps a copy",
                    "set AUDIT_BACKUP_ENABLED=1 and RISK_AUDIT_BACKUP_TARGET (backups copy "
                    f"each rotated file once sealed), or raise `rotate` to cover {minimum:g} "
                    "days — docs/operations.md, 'Backups'",
                )
            return Check(
                "rotation",
                OK,
                f"logrotate {file} (create mode); {where}, the archive keeps them for {minimum:g}",
            )
        return Check("rotation", OK, f"logrotate {file} (create mode)")
    if config.rotation.enabled:
        r = config.rotation
        what = " and ".join(
            x
            for x in (
                f"every {_gib(r.max_bytes)}" if r.max_bytes else "",
                f"every {r.interval / 3600:g} h (UTC)" if r.interval else "",
            )
            if x
        )
        return Check("rotation", OK, f"built-in, {what}")
    return Check(
        "rotation",
        WARN,
        "no rotation: one file grows without end",
        "set RISK_AUDIT_ROTATE_INTERVAL=daily (or RISK_AUDIT_ROTATE_BYTES), or install "
        "deploy/logrotate/riskaudit",
    )


def check_clock(config: AuditConfig, reader: ClockReader = read_clock) -> Check:
    state = reader()
    problem = state.problem(config.clock_max_error)
    if problem is None:
        return Check("clock", OK, f"synchronised, maximum error {state.max_error_s:g} s")
    status = FAIL if config.clock_required else WARN
    return Check(
        "clock",
        status,
        f"{problem} (maximum error {state.max_error_s:g} s)",
        "run chrony or ntpd against a UTC-traceable source (RTS 25: 1 ms, 100 µs for HFT)",
    )


def check_runtime_log(config: AuditConfig) -> Check:
    container = detect_container(config.in_kubernetes)
    kept = config.runtime_log_bytes
    if container is None:
        return Check("container log rotation", OK, "not in a container: stdout is the host's")
    if kept is None:
        default = (
            f"kubelet keeps {_gib(KUBELET_LOG_BYTES)} per container by default"
            if container == "kubernetes"
            else "Docker's json-file driver keeps everything unless max-size is set"
        )
        return Check(
            "container log rotation",
            WARN,
            f"in {container}: emergency lines live in the runtime's log ({default})",
            "size the runtime's log rotation for an outage's worth of emergency lines "
            "(Compose: max-size 100m, max-file 5; kubelet containerLogMaxSize/MaxFiles) "
            "and set RISK_AUDIT_RUNTIME_LOG_BYTES to what it keeps",
        )
    if kept < RUNTIME_LOG_MIN:
        return Check(
            "container log rotation",
            WARN,
            f"the runtime keeps {_gib(kept)} of stdout: under {_gib(RUNTIME_LOG_MIN)}",
            "raise max-size x max-file (about 1 KiB per emergency line)",
        )
    return Check("container log rotation", OK, f"the runtime keeps {_gib(kept)} of stdout")


def check_nats(config: AuditConfig) -> Check:
    """The NATS server fsyncs every write (``sync_interval: always``), read from its
    monitoring endpoint (RISK_AUDIT_NATS_MONITOR_URL): ✓, ✗ when it does not, ⚠ when
    it could not be read (unset, unreachable)."""
    # Here, not at the top: only a replicating deployment loads the replication package.
    from riskaudit.replication import SYNC_ALWAYS_FIX, check_sync_always  # noqa: PLC0415

    rep = config.replication
    synced, detail = check_sync_always(rep.monitor_url, min(rep.connect_timeout, 5.0))
    if synced:
        return Check("NATS durability", OK, detail)
    if synced is False:
        return Check(
            "NATS durability",
            FAIL,
            detail,
            f"{SYNC_ALWAYS_FIX} (nats-server 2.10 or later) and restart it, as "
            "deploy/nats/nats-server.conf does — docs/operations.md, 'Multi-host "
            "deployment with NATS'",
        )
    fix = (
        "set RISK_AUDIT_NATS_MONITOR_URL to a NATS server's monitoring endpoint"
        if rep.monitor_url is None
        else "make the server's monitoring (`http`) port reachable from here"
    )
    return Check("NATS durability", WARN, detail, fix)


def run_checks(
    config: AuditConfig,
    *,
    metrics_url: str | None = None,
    logrotate_file: Path | None = None,
    clock: ClockReader = read_clock,
    nats: bool = False,
) -> list[Check]:
    """Every check, in the runbook's order (``nats``: replication is configured, so the
    NATS server's durability is checked too)."""
    checks = [*check_volume(config), check_spool(config), check_key(config)]
    checks.append(check_backup(config, time.time()))
    metrics = check_metrics(metrics_url)
    if metrics is not None:
        checks.append(metrics)
    checks += [
        check_rotation(config, logrotate_file),
        check_clock(config, clock),
        check_runtime_log(config),
    ]
    if nats:
        checks.append(check_nats(config))
    return checks
