"""Format v1, the on-disk contract (docs/format.md is the reader's version).

One JSON object per line, UTF-8, ``\\n``-terminated, no newline inside a record. The
first two keys of every line are ``seq`` (1, 2, 3, ... never reused) and ``prev`` (the
lowercase hex SHA-256 of the previous line's bytes without its ``\\n``; 64 zeros for
``seq`` 1). The hash of a record is ``sha256(line)``: the bytes on disk are hashed as
they are, so no canonical JSON is needed and any edit breaks the link to the next line.

Event records continue with ``ts`` (when the log accepted the record, RFC 3339 UTC with
nine fractional digits and ``Z``), then the event's ``event_id``, ``event_type`` and
``priority`` (by name), ``source``, ``data``, ``metadata``, ``timestamp_ns``. Control
records carry ``kind`` third, their own fields, and ``ts`` last.

A stream lives in files whose names say what they are: the active log, sealed segments
named by the ``seq`` range they hold, files rotated by logrotate, recovered segments,
and beside them the checkpoint sidecar, the lock, the spool and the files set aside.
Every one of those names is built and recognised in one place.

This package is the bottom layer: every other package may import it, and it imports no
other riskaudit package (only the leaf modules ``riskaudit.errors``, ``riskaudit.events``
and ``riskaudit.redact``). Its parts:

* ``_codec``: the bytes of a line: encoding an event body on the producer's thread
  (:func:`encode_event_body`), the readable reference of event and control lines and of
  the writer's chaining (:func:`event_line`, :func:`control_line`, :func:`chain_batch`:
  the Rust core, ``riskaudit._native``, writes the same bytes, which the tests check),
  the fixed head of a line (:func:`split_head`), hashes and timestamps;
* ``_names``: every file name of a log directory (docs/format.md, "Where records live");
* ``_files``: durable writes (temporary file, fsync, rename, fsync the directory);
* ``_segments``: sealed segments: sealing, listing, reading (plain, ``.gz``, ``.zst``),
  compressing, and what a file's first and last records say.
"""

from riskaudit.format._codec import (
    EMERGENCY_PREFIX,
    FORMAT,
    ZERO_HASH,
    chain_batch,
    control_line,
    control_mid,
    encode_event,
    encode_event_body,
    event_line,
    format_ts,
    gap_range,
    is_control,
    line_hash,
    parse_ts,
    parse_utc,
    split_head,
    ts_ns_of,
    unsequenced_line,
)
from riskaudit.format._files import (
    FILE_MODE,
    atomic_write,
    dsync_works,
    ensure_dir,
    file_signature,
    fsync_dir,
    write_durably,
)
from riskaudit.format._names import (
    CENTRAL_MARK,
    CENTRAL_NAME,
    HOLES_NAME,
    LOG_GLOB,
    LOG_SUFFIX,
    SIDECAR_GLOB,
    SPOOL_GLOB,
    SUFFIXES,
    backup_state_path,
    forward_cursor_path,
    holds_path,
    is_closed_name,
    is_log_name,
    is_sidecar_name,
    is_stream_file_name,
    is_torn_name,
    lock_path_for,
    log_stem,
    not_records,
    parse_segment_name,
    recovered_glob,
    recovered_path,
    recovered_range,
    segment_name,
    sidecar_log_stem,
    sidecar_path,
    spool_file_name,
    spool_file_seq,
    temp_path,
    torn_path,
    truncated_path,
    uncompressed_name,
    untrusted_path,
    utc_stamp,
)
from riskaudit.format._segments import (
    Segment,
    compress,
    content_sha256,
    end_line,
    event_types,
    file_sha256,
    iter_bytes,
    last_line,
    list_segments,
    log_stream,
    open_segment,
    parse_segment,
    rotated_files,
    seal_as_segment,
    segment_end_ns,
    sha256_stream,
    stream_in,
    stream_of,
)

__all__ = [
    "CENTRAL_MARK",
    "CENTRAL_NAME",
    "EMERGENCY_PREFIX",
    "FILE_MODE",
    "FORMAT",
    "HOLES_NAME",
    "LOG_GLOB",
    "LOG_SUFFIX",
    "SIDECAR_GLOB",
    "SPOOL_GLOB",
    "SUFFIXES",
    "ZERO_HASH",
    "Segment",
    "atomic_write",
    "backup_state_path",
    "chain_batch",
    "compress",
    "content_sha256",
    "control_line",
    "control_mid",
    "dsync_works",
    "encode_event",
    "encode_event_body",
    "end_line",
    "ensure_dir",
    "event_line",
    "event_types",
    "file_sha256",
    "file_signature",
    "format_ts",
    "forward_cursor_path",
    "fsync_dir",
    "gap_range",
    "holds_path",
    "is_closed_name",
    "is_control",
    "is_log_name",
    "is_sidecar_name",
    "is_stream_file_name",
    "is_torn_name",
    "iter_bytes",
    "last_line",
    "line_hash",
    "list_segments",
    "lock_path_for",
    "log_stem",
    "log_stream",
    "not_records",
    "open_segment",
    "parse_segment",
    "parse_segment_name",
    "parse_ts",
    "parse_utc",
    "recovered_glob",
    "recovered_path",
    "recovered_range",
    "rotated_files",
    "seal_as_segment",
    "segment_end_ns",
    "segment_name",
    "sha256_stream",
    "sidecar_log_stem",
    "sidecar_path",
    "split_head",
    "spool_file_name",
    "spool_file_seq",
    "stream_in",
    "stream_of",
    "temp_path",
    "torn_path",
    "truncated_path",
    "ts_ns_of",
    "uncompressed_name",
    "unsequenced_line",
    "untrusted_path",
    "utc_stamp",
    "write_durably",
]
