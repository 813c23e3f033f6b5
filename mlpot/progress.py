"""Progress reports that suit where the output goes: a bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns. A terminal shows that as one changing line,
but a file or a pipe keeps every frame (824 KB for one training run). :func:`progress`
therefore gives a tqdm bar only when its stream is a terminal; otherwise it prints one plain
line every 30 seconds (count, rate, ETA and the latest postfix values), and nothing
for work that ends sooner.

While a bar is on screen, warnings are written above it (``tqdm.write``) instead of through
it, so a warning does not leave a broken bar behind.

Environment:
    ``MLPOT_PROGRESS``: ``auto`` (default: bar on a terminal, lines elsewhere), ``bar``,
    ``lines`` or ``off``.
    ``MLPOT_PROGRESS_SECONDS``: seconds between plain lines (default 30).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any, Iterable, Iterator, TextIO

__all__ = ["progress", "format_duration", "eta_text", "Progress"]

#: Seconds between two plain progress lines when the output is not a terminal.
DEFAULT_EVERY_S = 30.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min`` (rounded; for ETAs and elapsed times)."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m:02d} min"


def eta_text(done: float, total: float, elapsed_s: float) -> str:
    """``ETA 3 min 05 s`` from the mean rate so far (``ETA –`` before anything is done)."""
    if done <= 0 or total <= 0:
        return "ETA –"
    return "ETA " + format_duration(elapsed_s / done * max(total - done, 0))


class Progress:
    """Plain-line progress with the part of tqdm's interface mlpot uses: iteration,
    :meth:`update`, :meth:`set_postfix`, :meth:`close`, ``n`` and use as a context manager.

    Args:
        iterable: what to iterate over (or ``None``: count with :meth:`update`).
        total: the count at which the work is done (default ``len(iterable)``).
        desc: what is counted, e.g. ``"epoch 3/120"``.
        unit: the unit of the count, e.g. ``"step"``.
        initial: the count already done (a resumed run).
        file: the stream for the lines (default ``sys.stderr``).
        leave: print a last line at :meth:`close` when any line was printed.
        enabled: ``False``: print nothing at all.
    """

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, file: TextIO | None = None, leave: bool = False,
                 enabled: bool = True):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self._initial = initial
        self.file, self.leave, self.enabled = file, leave, enabled
        self.every_s = _every_s()  # seconds between lines
        self._start = self._last = time.monotonic()
        self._postfix = ""
        self._printed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more; print a line when ``every_s`` have passed since the last one."""
        self.n += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s:
            self._print(now)

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line, e.g. ``loss=1.2e-3``."""
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.enabled and self.leave and self._printed:
            self._print(time.monotonic())
        self.enabled = False  # closed: nothing more

    def _print(self, now: float) -> None:
        elapsed = now - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        if self.total:
            count = f"{self.n:g}/{self.total:g} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
            eta = ", " + eta_text(self.n - self._initial, self.total - self._initial, elapsed)
        else:
            count, eta = f"{self.n:g} {self.unit}", ""
        line = f"{self.desc}: {count}, {format_duration(elapsed)} elapsed, {rate:.3g} {self.unit}/s{eta}"
        print(line + (f", {self._postfix}" if self._postfix else ""), file=self.file or sys.stderr, flush=True)
        self._last, self._printed = now, True


def _mode(file: TextIO) -> str:
    mode = os.environ.get("MLPOT_PROGRESS", "auto").strip().lower()
    if mode not in ("auto", "bar", "lines", "off"):
        mode = "auto"
    if mode == "auto":
        isatty = getattr(file, "isatty", None)
        try:
            mode = "bar" if isatty is not None and isatty() else "lines"
        except ValueError:  # a closed stream
            mode = "lines"
    return mode


def _every_s() -> float:
    try:
        return max(0.0, float(os.environ.get("MLPOT_PROGRESS_SECONDS", DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, leave: bool = False, initial: float = 0,
             file: TextIO | None = None):
    """A progress report over ``iterable`` (or counted with ``update``): a tqdm bar when
    ``file`` (default ``sys.stderr``) is a terminal, else a :class:`Progress` that prints a
    plain line every ``MLPOT_PROGRESS_SECONDS`` (default 30) seconds.

    Both have ``update(n)``, ``set_postfix(**values)``, ``close()``, ``n``, iteration and
    ``with``. ``enabled=False`` prints nothing (the iterable is still iterated).
    """
    stream = file or sys.stderr
    mode = _mode(stream) if enabled else "off"
    if mode == "bar":
        return _Bar(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial, file=stream)
    return Progress(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, leave=leave,
                    enabled=mode == "lines")


def _write_warning_above_bar(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` while a bar is open: the warning, as the ``showwarning`` in
    place before the bar would write it, goes above the bar."""
    import io

    from tqdm import tqdm

    buffer = io.StringIO()
    shown = getattr(_LazyBar.cls, "saved_showwarning", None) or warnings._showwarning_orig
    shown(message, category, filename, lineno, buffer, line)
    text = buffer.getvalue().rstrip("\n")
    if text:
        tqdm.write(text, file=file or sys.stderr)


def _bar_class():
    from tqdm import tqdm

    class Bar(tqdm):
        """A tqdm bar that writes warnings above itself while it is open."""

        open_bars = 0
        saved_showwarning = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cls = type(self)
            if cls.open_bars == 0:
                cls.saved_showwarning = warnings.showwarning
                warnings.showwarning = _write_warning_above_bar
            cls.open_bars += 1
            self._counted = True

        def close(self):
            super().close()
            cls = type(self)
            if getattr(self, "_counted", False):
                self._counted = False
                cls.open_bars -= 1
                # Restore only what this class installed (a test may have swapped it since).
                if cls.open_bars == 0 and warnings.showwarning is _write_warning_above_bar:
                    warnings.showwarning = cls.saved_showwarning

    return Bar


class _LazyBar:
    """Builds the tqdm subclass on first use (tqdm is imported only when a bar is shown)."""

    cls = None

    def __call__(self, *args, **kwargs):
        if _LazyBar.cls is None:
            _LazyBar.cls = _bar_class()
        return _LazyBar.cls(*args, **kwargs)


_Bar = _LazyBar()
