"""Integrity: verify a stream of files against the format-v1 hash chain, the keys that
sign its checkpoints, seals, and the verifiable export."""

from riskaudit.integrity._export import (
    TIME_FORMS,
    TIME_PATTERN,
    ExportCheck,
    ExportResult,
    Selection,
    export,
    parse_time,
    verify_export,
)
from riskaudit.integrity._keys import (
    PublicKey,
    Signer,
    check_signature,
    generate,
    key_id_of,
    load_keyring,
    load_public_key,
    load_signer,
    signed_text,
)
from riskaudit.integrity._report import Finding, FindingKind, VerifyReport, VerifyStatus
from riskaudit.integrity._stream import (
    Source,
    expand,
    first_seq,
    last_seq,
    line_chunks,
    open_binary,
    order,
)
from riskaudit.integrity._verify import stream_directories, verify_paths

__all__ = [
    "TIME_FORMS",
    "TIME_PATTERN",
    "ExportCheck",
    "ExportResult",
    "Finding",
    "FindingKind",
    "PublicKey",
    "Selection",
    "Signer",
    "Source",
    "VerifyReport",
    "VerifyStatus",
    "check_signature",
    "expand",
    "export",
    "first_seq",
    "generate",
    "key_id_of",
    "last_seq",
    "line_chunks",
    "load_keyring",
    "load_public_key",
    "load_signer",
    "open_binary",
    "order",
    "parse_time",
    "signed_text",
    "stream_directories",
    "verify_export",
    "verify_paths",
]
