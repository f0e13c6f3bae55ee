"""Progress of a long job as one line: done/total, rate, ETA; and the closing "which ones failed".

    from osum_echat.progress import Progress, name_failures
    bar = Progress(total=len(items), desc="evaluate", unit="utt")   # total=None: no ETA, no %
    for item in items:
        ...
        bar.update(1, failed=0 or 1)
    bar.close()                                  # the final line: done, failed, rate, time
    print(name_failures("OUT.failed"))           # first failed keys with reasons, where the rest are

On a terminal (the stream is a tty) the line is rewritten in place, at most 5 times a second.
In a log (a file or a pipe) it is a plain line: at the first result, then at each 10% of the
total and at least every `every_s` seconds while something moves, so a short run still shows
it moving and a long one does not flood the log. The rate is taken from the first result on
(model loading before it would make the first rates and ETAs meaningless).
No torch here: watchers and tools import it freely.
"""
from __future__ import annotations

import os
import sys
import time

TTY_REFRESH_S = 0.2
LOG_EVERY_S = 30.0
LOG_STEPS = 10  # plain lines at each 10% of a known total


def seconds_text(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int | None, desc: str = "", unit: str = "utt", stream=None, tty: bool | None = None,
                 every_s: float = LOG_EVERY_S, initial: int = 0, clock=time.monotonic, echo: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s, self.clock = every_s, clock
        self.done = self.initial = initial
        self.failed = 0
        self.start = clock()
        self.first = None  # (time, done) of the first result
        self.last_print, self.last_printed_done, self.next_mark = None, None, 1
        self.width = 0
        self.echo = echo  # False: count only; the caller prints status() in its own lines

    # -- counting ----------------------------------------------------------
    def update(self, n: int = 1, failed: int = 0) -> None:
        self.set(self.done + n, self.failed + failed)

    def set(self, done: int, failed: int | None = None) -> None:
        """Absolute counts (a watcher summing files); failed is part of done."""
        now = self.clock()
        if self.first is None and done > self.initial:
            self.first = (now, done)
        self.done = done
        if failed is not None:
            self.failed = failed
        self._maybe_print(now)

    # -- numbers -----------------------------------------------------------
    def rate(self, now: float | None = None) -> float | None:
        """Per second, from the first result on; None until two points exist."""
        now = self.clock() if now is None else now
        if self.first is None:
            return None
        t0, d0 = self.first
        if now - t0 > 1e-6 and self.done > d0:
            return (self.done - d0) / (now - t0)
        elapsed = now - self.start
        return (self.done - self.initial) / elapsed if elapsed > 1e-6 else None

    def eta(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        if not self.total or not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def status(self, now: float | None = None) -> str:
        """e.g. '12/48 utt (25%), 3.10 utt/s, ETA 12s, 1 failed, 6s elapsed'."""
        now = self.clock() if now is None else now
        parts = [f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        rate = self.rate(now)
        parts.append(f"{rate:.2f} {self.unit}/s" if rate is not None else f"- {self.unit}/s")
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {seconds_text(eta)}")
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(f"{seconds_text(now - self.start)} elapsed")
        return ", ".join(parts)

    # -- output --------------------------------------------------------------
    def _maybe_print(self, now: float) -> None:
        if not self.echo or self.done == self.last_printed_done or (self.first is None and not self.tty):
            return  # in a log, the first line is the first result
        if self.tty:
            if self.last_print is None or now - self.last_print >= TTY_REFRESH_S:
                self._draw(now)
            return
        due = self.last_print is None  # the first result
        if self.total:
            mark = self.next_mark * self.total / LOG_STEPS
            if self.done >= mark:
                due = True
                while self.next_mark <= LOG_STEPS and self.done >= self.next_mark * self.total / LOG_STEPS:
                    self.next_mark += 1
        if self.last_print is not None and now - self.last_print >= self.every_s:
            due = True
        if due:
            self._line(now)

    def _prefix(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _draw(self, now: float) -> None:
        text = self._prefix() + self.status(now)
        self.stream.write("\r" + text + " " * max(0, self.width - len(text)))
        self.stream.flush()
        self.width = len(text)
        self.last_print, self.last_printed_done = now, self.done

    def _line(self, now: float) -> None:
        self.stream.write(self._prefix() + self.status(now) + "\n")
        self.stream.flush()
        self.last_print, self.last_printed_done = now, self.done

    def write(self, text: str) -> None:
        """A log line that does not garble the live line on a terminal."""
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0
        self.stream.write(text.rstrip("\n") + "\n")
        if self.tty and self.last_print is not None:
            self._draw(self.clock())
        self.stream.flush()

    def close(self) -> str:
        """Print the final line (done, failed, rate, time) and return it."""
        now = self.clock()
        text = self._prefix() + "done, " + self.status(now).replace("ETA 0s, ", "")
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()
        self.width = 0
        return text

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def name_failures(path: str, limit: int = 5, what: str = "failed", key_col: int = 0, reason_col: int = 1,
                  header: bool = False, where_col: int | None = None) -> str:
    """'' when `path` (tab-separated; by default key<TAB>reason, as OUT.failed) lists nothing, else one
    line naming the first `limit` keys with their reasons and where the full list is. `header`: the
    first line names the columns; `where_col`: shown instead of an empty key (a list line)."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    rows = rows[1:] if header else rows

    def cell(row, i):
        return row[i] if i is not None and i < len(row) else ""

    if not rows:
        return ""
    names = [f"{cell(r, key_col) or cell(r, where_col) or '?'} ({cell(r, reason_col) or '?'})" for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{len(rows)} {what}: {', '.join(names)}{more}; the full list: {path}"


def follow(counts, total: int | None, stop, desc: str = "", unit: str = "utt", poll_s: float = 0.5,
           stream=None, tty=None) -> Progress:
    """Poll `counts()` -> (done, failed) until `stop()` is true (read before the last poll, so the
    final count is complete); one Progress line meanwhile, the final line at the end."""
    bar = Progress(total, desc=desc, unit=unit, stream=stream, tty=tty)
    while True:
        finished = stop()
        bar.set(*counts())
        if finished:
            break
        time.sleep(poll_s)
    bar.close()
    return bar


def follow_in_thread(counts, total: int | None, desc: str = "", unit: str = "utt"):
    """`follow` in a daemon thread (rank 0 following every rank's files); returns `finish()`,
    which stops it after a last poll and waits for its final line."""
    import threading

    finished = threading.Event()
    thread = threading.Thread(target=follow, args=(counts, total, finished.is_set, desc, unit), daemon=True)
    thread.start()

    def finish():
        finished.set()
        thread.join()
    return finish
