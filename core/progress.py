"""Progress of long work: a bar in a terminal, and lines in the job log whatever is attached.

A detached job or one on a cluster has no terminal: its log is how a user follows it (`python -m jobs logs ID
--follow`). So every stage that takes long (augmenting, labelling, training, evaluating) reports through one
`Progress`, which draws a tqdm bar when asked and writes a line to the `distillery` logger (the job log) every
`every_s` seconds, or when told to, with the count, the rate and the time left:

    label: 4096/11873 ex (34.5%), features 5851, 58.2 ex/s, 2m13s left

Example::

    with Progress("label", total=len(blocks), unit="block", bar=progress) as done:
        for result in results:
            done.update(1, features=result.features)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

#: The logger of progress lines, under the job's `distillery` logger.
PROGRESS_LOGGER = "distillery.progress"
log = logging.getLogger(PROGRESS_LOGGER)
#: How the job log's lines look, from whichever process writes them.
LOG_FORMATTER = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")

_console: TextIO | None = None


def console() -> TextIO:
    """Where bars are drawn: the real stderr of a job (whose descriptor 2 the runner sends to the log), else
    `sys.stderr`."""
    return _console or sys.stderr


@contextlib.contextmanager
def use_console(stream: TextIO) -> Iterator[None]:
    """Draw bars on `stream` within the block (the job runner gives the real stderr)."""
    global _console
    previous, _console = _console, stream
    try:
        yield
    finally:
        _console = previous


#: Seconds between two automatic log lines: a long stage writes a few hundred lines, not one per block.
DEFAULT_EVERY_S = 30.0


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Counts work done out of `total`; draws a bar when `bar`, logs a line every `every_s` seconds.

    Args:
        desc: what is counted, first on each line ("label", "intermediate").
        total: the count when done.
        unit: the counted thing ("ex", "block", "step").
        bar: draw a tqdm bar on stderr (a terminal); the log lines are written either way.
        every_s: seconds between automatic lines; None writes lines only on `line()` and at the end.
        initial: work already done before this run (a resumed job); the rate counts only this run's.
    """

    def __init__(self, desc: str, total: int, unit: str, bar: bool, every_s: float | None = DEFAULT_EVERY_S,
                 initial: int = 0):
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.done = self._initial = initial
        self.fields: dict[str, Any] = {}
        self._started = self._last_line = time.monotonic()
        self._done_at_last_line = initial
        self._bar = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=console(), mininterval=1)

    def update(self, n: int = 1, **fields: Any) -> None:
        """`n` more done; `fields` (loss, features, ...) shown on the bar and on the next line."""
        self.done += n
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(n)
            if fields:
                self._bar.set_postfix({k: _format_value(v) for k, v in fields.items()}, refresh=False)
        if self.every_s is not None and time.monotonic() - self._last_line >= self.every_s:
            self.line()

    def line(self) -> None:
        """Write a progress line to the job log now."""
        elapsed = time.monotonic() - self._started
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit}"
                 + (f" ({100 * self.done / self.total:.1f}%)" if self.total else "")]
        parts += [f"{key} {_format_value(value)}" for key, value in self.fields.items()]
        parts.append(f"{rate:.3g} {self.unit}/s")
        if 0 < rate and self.done < self.total:
            parts.append(f"{format_duration((self.total - self.done) / rate)} left")
        log.info(", ".join(parts))
        self._last_line, self._done_at_last_line = time.monotonic(), self.done

    def close(self) -> None:
        """Close the bar; a last line when work was done since the previous one."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.done != self._done_at_last_line:
            self.line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
