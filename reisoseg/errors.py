"""The one exception type whose message is meant for the user."""


class ReIsoSegError(Exception):
    """An error the user can fix: commands print it on one line (naming the file and the problem) and exit 1."""
