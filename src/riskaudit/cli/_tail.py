"""``riskaudit tail [-f] [-n N] PATH``"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from riskaudit.cli._common import fail
from riskaudit.errors import AuditFormatError
from riskaudit.integrity import expand, open_binary, order


def render(line: bytes) -> str:
    """One record as a readable line: seq, ts, what, then the rest compactly."""
    try:
        record: dict[str, Any] = orjson.loads(line)
    except orjson.JSONDecodeError:
        return f"?  (not a record) {line[:120]!r}"
    seq = record.pop("seq", "?")
    record.pop("prev", None)
    ts = record.pop("ts", "")
    if "kind" in record:
        what = f"[{record.pop('kind')}]"
        rest = record
    else:
        what = f"{record.pop('event_type', '?')} {record.pop('priority', '')}".strip()
        rest = {k: record[k] for k in ("source", "data", "metadata") if record.get(k)}
    return f"{seq:>8}  {ts}  {what:<28} {orjson.dumps(rest).decode()}"


def _last_lines(path: Path, n: int) -> list[bytes]:
    with open_binary(path) as fh:
        return [line.rstrip(b"\n") for line in deque(fh, maxlen=n)]


def tail(
    path: Annotated[Path, typer.Argument(help="The log file, or its directory.")],
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many records.")] = 10,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new records.")
    ] = False,
) -> None:
    """Print the most recent records readably (and follow the file with -f). PATH may be
    the log's directory, as for verify: its newest file is shown."""
    if not path.exists():
        raise fail(f"{path}: no such file")
    if path.is_dir():
        try:
            path = order(expand([str(path)]))[-1].path
        except AuditFormatError as exc:
            raise fail(str(exc)) from exc
    try:
        for line in _last_lines(path, lines):
            typer.echo(render(line))
    except (OSError, EOFError) as exc:
        raise fail(f"cannot read {path}: {exc}") from exc
    if not follow:
        return
    fh = open(path, "rb")  # noqa: SIM115 - reopened across rotations below
    fh.seek(0, os.SEEK_END)
    inode = os.fstat(fh.fileno()).st_ino
    buf = b""
    try:
        while True:
            chunk = fh.read(1 << 16)
            if chunk:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    typer.echo(render(line))
                continue
            time.sleep(0.2)
            try:
                if os.stat(path).st_ino != inode:  # rotated: continue in the new file
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115
                    inode = os.fstat(fh.fileno()).st_ino
                    buf = b""
            except FileNotFoundError:
                pass
    except KeyboardInterrupt:
        pass
    finally:
        fh.close()
