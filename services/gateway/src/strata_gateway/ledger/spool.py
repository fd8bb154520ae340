"""An on-disk spool of usage records the gateway could not publish: append-only JSONL segments.

    spool_dir/
      usage-000000000007.jsonl   sealed: waiting for replay (oldest first)
      usage-000000000008.jsonl   sealed
      usage-000000000009.jsonl   open: appends go here (this process only)

Each append writes whole lines and fsyncs the file (and the directory when a segment is
created), so an appended record survives a crash or power loss of the gateway. A process
that starts finds the previous process's segments and treats them all as sealed; its own
appends start a new segment. A crash in the middle of a write leaves at most one torn
last line, which :meth:`UsageSpool.read` skips. One process owns a directory at a time
(an exclusive `flock` on `spool_dir/.lock`; a second owner gets :class:`SpoolInUse`).
The class is not thread-safe: the sink serializes calls (they run in a worker thread so
the event loop never waits on fsync).
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import BinaryIO

__all__ = ["SpoolInUse", "UsageSpool"]

_SEGMENT = re.compile(r"^usage-(\d{12})\.jsonl$")


class SpoolInUse(RuntimeError):
    """Another process (or sink) holds the spool directory: each gateway replica needs its own."""


class UsageSpool:
    """Append-only JSONL segments under `directory`.

    Args:
        directory: where the segments live (created if missing); locked until :meth:`close`.
        segment_max_bytes: an open segment at least this big is sealed on the next append.
    """

    def __init__(self, directory: Path, *, segment_max_bytes: int = 4 << 20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.directory / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise SpoolInUse(f"usage spool {self.directory} is in use by another process or sink") from None
        self._max = segment_max_bytes
        self._open: BinaryIO | None = None
        self._open_path: Path | None = None
        self._next = max((seq for seq, _ in self._segments()), default=0) + 1

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.fullmatch(path.name)
            if match is not None:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def append(self, lines: list[bytes]) -> None:
        """Durably append `lines` (each one JSON document without a newline).

        Raises:
            OSError: the disk refused the write (full, read-only, …).
        """
        if self._open is not None and self._open.tell() >= self._max:
            self.seal()
        if self._open is None:
            self._open_path = self.directory / f"usage-{self._next:012d}.jsonl"
            self._next += 1
            self._open = open(self._open_path, "ab")  # noqa: SIM115 - kept open across appends, closed by seal()
            self._fsync_dir()
        try:
            self._open.write(b"".join(line + b"\n" for line in lines))
            self._open.flush()
            os.fsync(self._open.fileno())
        except OSError:
            self.seal()  # a torn line must stay the segment's last: later appends go to a new one
            raise

    def seal(self) -> None:
        """Close the open segment (if any) so that it can be replayed; the next append opens a new one."""
        if self._open is not None:
            self._open.close()
            self._open = None
            self._open_path = None

    def sealed(self) -> list[Path]:
        """Segments ready for replay, oldest first (every segment but the open one)."""
        return [path for _, path in self._segments() if path != self._open_path]

    @staticmethod
    def read(segment: Path) -> list[bytes]:
        """The complete lines of `segment`, in order (a torn last line is left out)."""
        data = segment.read_bytes()
        lines = data.split(b"\n")
        return [line for line in lines[:-1] if line.strip()]  # the piece after the last newline is torn or empty

    def remove(self, segment: Path) -> None:
        """Delete a replayed segment."""
        segment.unlink(missing_ok=True)
        self._fsync_dir()

    def pending_records(self) -> int:
        """Records in every segment (open included); reads the files, so not for hot paths."""
        return sum(len(self.read(path)) for _, path in self._segments())

    def close(self) -> None:
        """Close the open segment (its records stay for the next process) and unlock the directory."""
        self.seal()
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
