"""The one exception type whose message is meant for the user."""
from __future__ import annotations

import re
from typing import Mapping


class ReIsoSegError(Exception):
    """An error the user can fix: commands print it on one line (naming the file and the problem) and exit 1.

    Messages name the parameters of the function that raised them in backquotes (`step_size`); a command shows the
    flag that sets that parameter instead (`in_terms_of`)."""

    exit_code = 1
    label = "error"

    def in_terms_of(self, flags: Mapping[str, str]) -> str:
        """The message with each backquoted parameter that has a flag replaced by the flag (e.g. --step_size)."""
        return re.sub(r"`(\w+)`", lambda match: flags.get(match.group(1), match.group(0)), str(self))


class TrainingStopped(ReIsoSegError):
    """Training stopped on a signal (SIGTERM: a cluster's preemption) after saving a checkpoint to continue from."""

    exit_code = 128 + 15  # the shell's status for a process ended by SIGTERM
    label = "stopped"
