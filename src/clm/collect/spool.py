"""The durable spool: an event is acknowledged only once it is on disk.

Design choices (the task asked for them to be written down here):

- **Format.** Newline-delimited JSON, one record per line, in segment files
  `seg-<12-digit sequence>.<state>`. A record is an `events` row (`"k": "e"`) or a
  `rejected` row (`"k": "r"`), already mapped, so that loading needs no Python per
  row: DuckDB reads a sealed segment with `read_json` directly. Columns without a
  value are left out of a record (read as NULL): a quarter fewer bytes per event
  to write, fsync and parse.
- **Append and group commit.** Requests hand their records to `write()`, which
  returns a future. One writer thread takes everything queued since its last turn,
  writes it with a single `write` and a single `fsync`, then resolves all those
  futures: concurrent requests share one fsync (group commit), so the fsync rate,
  not the request rate, bounds the disk. A request is answered only after its
  future resolved; if fsync fails the future carries the error and the request gets
  a 503, never a 200.
- **Segments.** The writer appends to `seg-N.open`. Every `rotate_seconds` (or
  `rotate_bytes`, or a quarter of `rotate_seconds` after the last write) it seals the
  file: fsync, rename to `seg-N.jsonl`, fsync the
  directory. Only sealed segments are loaded; the loader deletes a segment once its
  rows are committed in the warehouse.
- **Crash recovery.** A crash can leave a `.open` segment whose last line is torn
  (its write never completed, so it was never acknowledged). On start the spool
  truncates every `.open` file to its last newline, seals it, and starts a new
  segment with the next sequence number; nothing is ever appended to a file written
  by an earlier process.
- **One process per spool.** An exclusive `flock` on `spool.lock` refuses a second
  server on the same directory, which would otherwise interleave sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from clm.errors import ConfigError

log = logging.getLogger("clm.collect")

OPEN, SEALED = ".open", ".jsonl"

# What waits for a group commit: a thread future (`write`), or an asyncio future
# and its loop (`write_async`).
Waiter = Future[None] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def name_os_thread(name: str) -> None:
    """Give the calling thread `name` (at most 15 bytes) in the OS too, so that
    `top -H` and /proc/<pid>/task show the collector's threads apart (the benchmark
    reports CPU per thread from there). Best effort: Linux only."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # 15 = PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seq(path: Path) -> int:
    return int(path.stem.split("-")[1])


def sealed_segments(directory: Path) -> list[Path]:
    """Sealed segments, oldest first."""
    return sorted(directory.glob("seg-*" + SEALED), key=_seq)


def recover(directory: Path) -> int:
    """Seal what a crashed process left open; return the next free sequence number."""
    last = -1
    for path in sorted(directory.glob("seg-*" + OPEN), key=_seq):
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            log.warning(
                "spool %s: dropped %d bytes of a torn, unacknowledged last record",
                path.name,
                len(data) - keep,
            )
            with path.open("r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        path.rename(path.with_suffix(SEALED))
        last = max(last, _seq(path))
    for path in directory.glob("seg-*" + SEALED):
        last = max(last, _seq(path))
    _fsync_dir(directory)
    return last + 1


class Spool:
    """Append-only, fsync'd, group-committed segment files in `directory`."""

    def __init__(
        self,
        directory: str | Path,
        *,
        rotate_seconds: float = 1.0,
        rotate_bytes: int = 64 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.rotate_seconds = rotate_seconds
        self.rotate_bytes = rotate_bytes
        self._pending: list[tuple[bytes, Waiter]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.sealed = threading.Event()  # set whenever a segment is sealed
        self.fsyncs = 0
        # The slowest write + fsync so far: every request waiting on that group
        # commit waited this long (reported by /v1/health).
        self.slowest_commit = 0.0
        self.records = 0
        self.last_write = time.monotonic()  # when records last reached the file
        self.sealed_bytes = 0  # bytes of the segments this process sealed

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "spool.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise ConfigError(
                f"spool directory {str(self.directory)!r} is in use by another clm "
                "serve; stop it or set serve.spool_dir to another folder"
            ) from None
        self._next = recover(self.directory)
        if sealed_segments(self.directory):
            self.sealed.set()
        self._open_segment()
        self._thread = threading.Thread(
            target=self._run, name="clm-spool-writer", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, seal the open segment, stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        os.close(self._lock_fd)

    # -- writing ----------------------------------------------------------------------

    def write(self, data: bytes) -> Future[None]:
        """Queue newline-ended records; the future resolves once they are fsync'd."""
        fut: Future[None] = Future()
        with self._cond:
            if self._closing:
                fut.set_exception(RuntimeError("the spool is closed"))
                return fut
            self._pending.append((data, fut))
            self._cond.notify()
        return fut

    def write_async(self, data: bytes) -> asyncio.Future[None]:
        """`write` for a coroutine: an asyncio future of the running loop, resolved
        together with the rest of its group commit by one call into that loop
        (cheaper per request than wrapping a thread future)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._closing:
                fut.set_exception(RuntimeError("the spool is closed"))
                return fut
            self._pending.append((data, (loop, fut)))
            self._cond.notify()
        return fut

    def _open_segment(self) -> None:
        self._path = self.directory / f"seg-{self._next:012d}{OPEN}"
        self._next += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)  # the new file's name must survive a crash too
        self._size = 0
        self._opened = time.monotonic()

    def _seal(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        if self._size:
            self._path.rename(self._path.with_suffix(SEALED))
        else:
            self._path.unlink()
        _fsync_dir(self.directory)
        if self._size:
            self.sealed_bytes += self._size
            self.sealed.set()

    def _run(self) -> None:
        name_os_thread("clm-spool")
        while True:
            idle_after = self.rotate_seconds / 4
            with self._cond:
                if not self._pending and not self._closing:
                    now = time.monotonic()
                    left = self.rotate_seconds - (now - self._opened)
                    if self._size:
                        left = min(left, idle_after - (now - self.last_write))
                    self._cond.wait(timeout=max(left, 0.01))
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                self._commit(batch)
            now = time.monotonic()
            # A segment is sealed when it is old or large enough, or once nothing
            # was written to it for a quarter of the interval: when traffic stops,
            # its last records reach the loader without waiting out the interval.
            if closing or (
                self._size
                and (
                    now - self._opened >= self.rotate_seconds
                    or self._size >= self.rotate_bytes
                    or now - self.last_write >= idle_after
                )
            ):
                try:
                    self._seal()
                    if closing:
                        return
                    self._open_segment()
                except OSError:
                    log.exception("spool: cannot rotate segment %s", self._path)
                    if closing:
                        return

    def _commit(self, batch: list[tuple[bytes, Waiter]]) -> None:
        data = b"".join(d for d, _ in batch)
        started = time.monotonic()
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError as exc:
            log.error("spool: write or fsync failed: %s", exc)
            # Cut off what part of the batch did reach the file: it is not
            # acknowledged, and later records must not follow a torn line.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.exception("spool: cannot truncate %s", self._path)
            _settle(batch, exc)
            return
        self._size += len(data)
        self.fsyncs += 1
        self.slowest_commit = max(self.slowest_commit, time.monotonic() - started)
        self.records += data.count(b"\n")
        self.last_write = time.monotonic()
        _settle(batch, None)


def _settle(batch: list[tuple[bytes, Waiter]], exc: BaseException | None) -> None:
    """Resolve a group commit's waiters: thread futures here, asyncio futures by
    one call into each of their loops."""
    loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, waiter in batch:
        if isinstance(waiter, tuple):
            loops.setdefault(waiter[0], []).append(waiter[1])
        elif exc is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(exc)
    for loop, futures in loops.items():
        # A loop closed meanwhile has no one left waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, futures, exc)


def _resolve(futures: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for fut in futures:
        if fut.done():  # cancelled: the client went away
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)
