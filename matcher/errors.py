"""The one exception type the command line turns into a one-line message."""


class MatcherError(Exception):
    """A user-facing failure: bad input file, bad option value, unreadable trace.

    The CLI prints ``matcher: <message>`` and exits 1; no traceback unless --debug.
    """


class TraceError(MatcherError):
    """A trace or driver file that cannot be used at all (names the file and the problem)."""


class RunStopped(MatcherError):
    """The run cannot go on (e.g. its last shard is lost); the replay stops it with a checkpoint."""


class UsageError(MatcherError):
    """A bad argument found after parsing (e.g. an --out that exists): the CLI exits 2, like argparse."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none): for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
