"""Backup targets: a directory (another volume, a mounted share) or S3 with Object Lock.

Both store immutable objects under keys like ``<stream>/segments/<segment file>`` and
``<stream>/checkpoints/<covers seq>-<seq>.json``, each with its SHA-256 (of the stored
bytes) and the SHA-256 of the records inside (the same for a plain and a compressed
copy). A put is atomic: a directory target writes a temp file, fsyncs it, renames it and
fsyncs the directory; S3 stores an object whole or not at all.

On S3 every object is written with Object Lock retention in COMPLIANCE mode until its
retain-until date: nobody, root account included, can delete that version or shorten
its retention before then. The bucket must have been created with Object Lock enabled;
a bucket without it is refused (``object_lock=False`` allows it for stores that lack
the feature, and the docs say what that costs). The S3 client is injected, so tests and
other S3-compatible stores plug in; credentials come from boto3's usual sources.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from riskaudit.errors import AuditBackupError, AuditStorageError
from riskaudit.format import atomic_write, ensure_dir, fsync_dir

_READ = 8 << 20


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    sha256: str
    content_sha256: str
    retain_until: dt.datetime | None
    size: int
    legal_hold: bool = False


class BackupTarget(Protocol):
    """Where backups go. Every method raises AuditBackupError on failure."""

    description: str

    def head(self, key: str) -> ObjectInfo | None: ...

    def put(self, key: str, source: Path | bytes, info: ObjectInfo) -> None: ...

    def read(self, key: str) -> Iterator[bytes]: ...

    def keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def set_legal_hold(self, key: str, on: bool) -> None: ...


class DirectoryTarget:
    """Backups in a directory; ``<key>.meta.json`` next to each object holds its hashes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if not str(p).startswith(str(self.root.resolve())):
            raise AuditBackupError(f"key {key!r} leaves the backup directory")
        return p

    def head(self, key: str) -> ObjectInfo | None:
        meta = self._path(key).with_name(self._path(key).name + ".meta.json")
        try:
            raw = orjson.loads(meta.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise AuditBackupError(f"{meta}: unreadable ({exc})") from exc
        until = raw.get("retain_until")
        return ObjectInfo(
            key=key,
            sha256=raw["sha256"],
            content_sha256=raw["content_sha256"],
            retain_until=dt.datetime.fromisoformat(until) if until else None,
            size=int(raw.get("size", 0)),
            legal_hold=bool(raw.get("legal_hold", False)),
        )

    def put(self, key: str, source: Path | bytes, info: ObjectInfo) -> None:
        target = self._path(key)
        try:
            ensure_dir(target.parent)
            tmp = target.with_name(f".{target.name}.tmp")
            with open(tmp, "wb") as dst:
                if isinstance(source, bytes):
                    dst.write(source)
                else:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, dst, _READ)
                dst.flush()
                os.fsync(dst.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            meta = {
                "sha256": info.sha256,
                "content_sha256": info.content_sha256,
                "retain_until": info.retain_until.isoformat() if info.retain_until else None,
                "size": info.size,
            }
            atomic_write(target.with_name(target.name + ".meta.json"), orjson.dumps(meta))
        except (OSError, AuditStorageError) as exc:
            raise AuditBackupError(f"cannot write {target}: {exc}") from exc

    def read(self, key: str) -> Iterator[bytes]:
        try:
            with open(self._path(key), "rb") as fh:
                while block := fh.read(_READ):
                    yield block
        except OSError as exc:
            raise AuditBackupError(f"cannot read {key} from {self.root}: {exc}") from exc

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith((".meta.json", ".tmp")) or name.startswith("."):
                    continue
                out.append(str(Path(dirpath, name).relative_to(self.root)))
        return sorted(out)

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Recorded next to the object; :meth:`delete` refuses while it is on (the file
        system itself does not enforce it: S3 Object Lock does)."""
        meta = self._path(key).with_name(self._path(key).name + ".meta.json")
        try:
            raw = orjson.loads(meta.read_bytes())
            raw["legal_hold"] = on
            atomic_write(meta, orjson.dumps(raw))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise AuditBackupError(f"cannot set the legal hold of {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        info = self.head(key)
        now = dt.datetime.now(dt.UTC)
        if info is not None and info.legal_hold:
            raise AuditBackupError(f"{key} is under a legal hold")
        if info is not None and info.retain_until is not None and info.retain_until > now:
            raise AuditBackupError(f"{key} is retained until {info.retain_until.isoformat()}")
        target = self._path(key)
        try:
            for p in (target, target.with_name(target.name + ".meta.json")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            fsync_dir(target.parent)
        except OSError as exc:
            raise AuditBackupError(f"cannot delete {target}: {exc}") from exc


class S3Target:
    """Backups in ``s3://bucket/prefix`` with Object Lock (COMPLIANCE) on every object."""

    def __init__(self, client: Any, bucket: str, prefix: str, *, object_lock: bool = True) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.object_lock = object_lock
        self.description = f"s3://{bucket}/{self.prefix}"
        self._checked = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise AuditBackupError(f"{self.description}: {what} failed: {exc}") from exc

    def check_lock(self) -> None:
        """Refuse a bucket without Object Lock (unless told it may lack it)."""
        if self._checked or not self.object_lock:
            return
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                raise AuditBackupError(f"{self.description}: {exc}") from exc
            conf = {}
        enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise AuditBackupError(
                f"bucket {self.bucket} has no Object Lock: create it with Object Lock enabled "
                "(or set RISK_AUDIT_BACKUP_OBJECT_LOCK=0 for a store without it)"
            )
        self._checked = True

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise AuditBackupError(f"{self.description}: head {key} failed: {exc}") from exc
        meta = resp.get("Metadata", {})
        if "sha256" not in meta:
            return None
        return ObjectInfo(
            key=key,
            sha256=meta["sha256"],
            content_sha256=meta.get("content-sha256", ""),
            retain_until=resp.get("ObjectLockRetainUntilDate"),
            size=int(resp.get("ContentLength", 0)),
            legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON",
        )

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Object Lock legal hold on the object's current version: no deletion while it
        is on, whatever its retain-until date (and independent of it)."""
        self._call(
            f"legal hold {key}",
            self.client.put_object_legal_hold,
            Bucket=self.bucket,
            Key=self._key(key),
            LegalHold={"Status": "ON" if on else "OFF"},
        )

    def put(self, key: str, source: Path | bytes, info: ObjectInfo) -> None:
        self.check_lock()
        md5 = hashlib.md5(usedforsecurity=False)
        if isinstance(source, bytes):
            md5.update(source)
        else:
            with open(source, "rb") as fh:
                while block := fh.read(_READ):
                    md5.update(block)
        extra: dict[str, Any] = {}
        if self.object_lock and info.retain_until is not None:
            extra = {
                "ObjectLockMode": "COMPLIANCE",
                "ObjectLockRetainUntilDate": info.retain_until,
            }
        with contextlib.ExitStack() as stack:
            body: Any = (
                source if isinstance(source, bytes) else stack.enter_context(open(source, "rb"))
            )
            self._call(
                f"put {key}",
                self.client.put_object,
                Bucket=self.bucket,
                Key=self._key(key),
                Body=body,
                ContentLength=info.size,
                ContentMD5=base64.b64encode(md5.digest()).decode("ascii"),
                Metadata={"sha256": info.sha256, "content-sha256": info.content_sha256},
                **extra,
            )

    def read(self, key: str) -> Iterator[bytes]:
        resp = self._call(
            f"get {key}", self.client.get_object, Bucket=self.bucket, Key=self._key(key)
        )
        body = resp["Body"]
        try:
            while block := body.read(_READ):
                yield block
        finally:
            body.close()

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        token: str | None = None
        full = self._key(prefix)
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call("list", self.client.list_objects_v2, **kwargs)
            for obj in resp.get("Contents", []):
                k = obj["Key"]
                out.append(k[len(self.prefix) + 1 :] if self.prefix else k)
            if not resp.get("IsTruncated"):
                return sorted(out)
            token = resp.get("NextContinuationToken")

    def delete(self, key: str) -> None:
        """Delete every version of the object (Object Lock refuses it before its date)."""
        resp = self._call(
            "list versions",
            self.client.list_object_versions,
            Bucket=self.bucket,
            Prefix=self._key(key),
        )
        for v in resp.get("Versions", []) + resp.get("DeleteMarkers", []):
            if v["Key"] != self._key(key):
                continue
            self._call(
                f"delete {key}",
                self.client.delete_object,
                Bucket=self.bucket,
                Key=v["Key"],
                VersionId=v["VersionId"],
            )


def make_s3_client(endpoint_url: str | None, region: str | None = None) -> Any:
    """A boto3 S3 client for AWS or an S3-compatible store (path-style addressing,
    checksums only where the API requires them: older stores reject the new headers)."""
    # boto3 takes a third of a second to import: only when S3 is used.
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def open_target(
    target: str, *, endpoint_url: str | None = None, object_lock: bool = True, client: Any = None
) -> BackupTarget:
    """``s3://bucket/prefix`` or a directory path."""
    if target.startswith("s3://"):
        rest = target[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise AuditBackupError(f"{target!r}: no bucket named")
        return S3Target(
            client if client is not None else make_s3_client(endpoint_url),
            bucket,
            prefix,
            object_lock=object_lock,
        )
    return DirectoryTarget(Path(target))
