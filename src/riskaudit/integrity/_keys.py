"""Ed25519 keys for checkpoints: generation, loading, key ids, the signed text.

The signed text of a checkpoint is exactly these UTF-8 bytes, each line ending in
``\\n``::

    riskaudit-checkpoint/1
    <stream>
    <covers_seq>
    <covers_hash>
    <ts>

``sig`` is the standard base64 (padded) of the Ed25519 signature over them; public keys
are PEM (SubjectPublicKeyInfo) files; ``key_id`` is the first 16 hex digits of the
SHA-256 of the raw 32-byte public key. A keyring says when each key may sign, so a key
stolen today cannot re-seal last year.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from riskaudit.errors import AuditConfigError, AuditFormatError
from riskaudit.format import atomic_write, parse_utc

SIGNED_TEXT_HEADER = "riskaudit-checkpoint/1"


def signed_text(stream: str, covers_seq: int, covers_hash: str, ts: str) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return f"{SIGNED_TEXT_HEADER}\n{stream}\n{covers_seq}\n{covers_hash}\n{ts}\n".encode()


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Signer:
    """The writer's private key."""

    key: Ed25519PrivateKey
    key_id: str

    def sign(self, text: bytes) -> str:
        return base64.b64encode(self.key.sign(text)).decode("ascii")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key and the time range (ns since the epoch) it may sign in."""

    key: Ed25519PublicKey
    key_id: str
    not_before: int | None = None
    not_after: int | None = None

    def valid_at(self, ts_ns: int) -> bool:
        if self.not_before is not None and ts_ns < self.not_before:
            return False
        return self.not_after is None or ts_ns <= self.not_after


def generate(out_dir: Path) -> tuple[Path, Path, str]:
    """Write ``signing-key.pem`` (0600) and ``signing-key.pub.pem``; return the paths and key id."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = out_dir / "signing-key.pem"
    public = out_dir / "signing-key.pub.pem"
    if private.exists():
        raise AuditConfigError("--out", f"{private} exists; refusing to overwrite a key")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    atomic_write(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return private, public, key_id_of(key.public_key())


def load_signer(path: Path) -> Signer:
    """The private key for ``RISK_AUDIT_SIGNING_KEY_FILE``."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise AuditConfigError("RISK_AUDIT_SIGNING_KEY_FILE", f"cannot load {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditConfigError("RISK_AUDIT_SIGNING_KEY_FILE", f"{path} is not an Ed25519 key")
    return Signer(key, key_id_of(key.public_key()))


def _public_from_pem(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditFormatError(f"{where}: not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditFormatError(f"{where}: not an Ed25519 public key")
    return key


def load_public_key(path: Path) -> PublicKey:
    """A PEM (SubjectPublicKeyInfo) Ed25519 public key, valid at any time."""
    key = _public_from_pem(path.read_bytes(), str(path))
    return PublicKey(key, key_id_of(key))


def load_keyring(path: Path) -> list[PublicKey]:
    """A JSON list: ``{"public_key": PEM text | "public_key_file": path,
    "not_before": RFC 3339, "not_after": RFC 3339 (optional)}``."""
    try:
        entries = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AuditFormatError(f"{path}: not a JSON keyring: {exc}") from exc
    if not isinstance(entries, list):
        raise AuditFormatError(f"{path}: a keyring is a JSON list of keys")
    keys = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        if "public_key" in entry:
            pem = str(entry["public_key"]).encode()
        elif "public_key_file" in entry:
            pem = (path.parent / entry["public_key_file"]).read_bytes()
        else:
            raise AuditFormatError(f"{where}: needs public_key or public_key_file")
        key = _public_from_pem(pem, where)
        keys.append(
            PublicKey(
                key,
                key_id_of(key),
                _time(entry.get("not_before"), where),
                _time(entry.get("not_after"), where),
            )
        )
    return keys


def _time(text: str | None, where: str) -> int | None:
    """RFC 3339 UTC (``Z``), with or without a fraction, to ns since the epoch."""
    if text is None:
        return None
    try:
        return parse_utc(str(text))
    except ValueError as exc:
        raise AuditFormatError(f"{where}: bad time {text!r}: {exc}") from exc


def check_signature(
    keys: list[PublicKey], key_id: str | None, sig: str | None, text: bytes, ts_ns: int
) -> str | None:
    """None if a known key valid at ``ts_ns`` signed ``text``; else why not."""
    if not key_id or not sig:
        return "unsigned checkpoint"
    candidates = [k for k in keys if k.key_id == key_id]
    if not candidates:
        return f"signed by unknown key {key_id}"
    try:
        raw = base64.b64decode(sig, validate=True)
    except ValueError:
        return "signature is not base64"
    good = None
    for k in candidates:
        try:
            k.key.verify(raw, text)
        except InvalidSignature:
            continue
        good = k
        break
    if good is None:
        return f"bad signature (key {key_id})"
    if not any(k.valid_at(ts_ns) for k in candidates if k.key_id == good.key_id):
        return f"key {key_id} was not valid at the checkpoint's time"
    return None
