"""What a command shows: its own steps and progress bars on the terminal, the engine's chatter in a log file."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator, Sequence


@contextlib.contextmanager
def engine_output(log: str | os.PathLike, *, verbose: bool = False) -> Iterator[None]:
    """Send standard output (nnU-Net's prints, this process's and those of the workers it forks) and Python warnings
    to `log`, appended; standard error (progress bars, errors) stays on the terminal. With `verbose` nothing is
    redirected."""
    if verbose:
        yield
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(log, "a") as handle, warnings.catch_warnings():
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: handle.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            os.dup2(handle.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
    finally:
        os.close(saved)


class LineProgress:
    """What a progress bar says, as one line per step: for standard error that is a file (a cluster job's log),
    where a redrawn bar would leave a line at every redraw. Offers the part of tqdm's interface we use."""

    def __init__(self, total: int | None, description: str, unit: str, initial: int = 0):
        self.total, self.n, self.description, self.unit, self.postfix = total, initial, description, unit, ""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exception: object) -> None:
        return None

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, count: int = 1) -> None:
        if count <= 0:
            return
        self.n += count
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.description}: {self.n}{of} {self.unit}{' ' + self.postfix if self.postfix else ''}",
              file=sys.stderr, flush=True)


def progress_bar(total: int | None, description: str, unit: str, *, enabled: bool = True, initial: int = 0):
    """A tqdm bar on standard error (which `engine_output` leaves on the terminal), or a `LineProgress` where
    standard error is not a terminal."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, description, unit, initial)
    return tqdm(total=total, initial=initial, desc=description, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


@contextlib.contextmanager
def files_progress(expected: Sequence[Path], description: str, unit: str, *, enabled: bool = True,
                   interval_s: float = 0.5) -> Iterator[None]:
    """A bar that counts which of the `expected` files exist, while an engine that reports no progress of its own
    (nnU-Net's folder prediction) writes them."""
    with progress_bar(len(expected), description, unit, enabled=enabled) as bar:
        stop = threading.Event()

        def watch() -> None:
            while True:
                stopping = stop.wait(interval_s)
                bar.update(sum(path.exists() for path in expected) - bar.n)
                if stopping:
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
