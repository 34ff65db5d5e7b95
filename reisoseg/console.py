"""What a command shows: its own steps and progress bars on the terminal, the engine's chatter in a log file."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def engine_output(log: str | os.PathLike, *, verbose: bool = False) -> Iterator[None]:
    """Send standard output (nnU-Net's prints, this process's and those of the workers it forks) to `log`, appended;
    standard error (progress bars, errors) stays on the terminal. With `verbose` nothing is redirected."""
    if verbose:
        yield
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(log, "a") as handle:
            os.dup2(handle.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
    finally:
        os.close(saved)
