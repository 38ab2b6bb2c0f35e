"""Integrity: verify a stream of files against the format-v1 hash chain."""

from riskaudit.integrity._sources import Source, expand, first_seq, line_chunks, open_binary, order
from riskaudit.integrity._verify import Finding, VerifyReport, stream_directories, verify_paths

__all__ = [
    "Finding",
    "Source",
    "VerifyReport",
    "expand",
    "first_seq",
    "line_chunks",
    "open_binary",
    "order",
    "stream_directories",
    "verify_paths",
]
