"""User-facing errors: the CLI (and the web page) print their message on one line; the CLI exits with status 2."""

from __future__ import annotations


class CentrifugeError(Exception):
    """Bad input or an impossible request; the message is for the user."""


class CheckpointError(Exception):
    """A checkpoint that cannot be read; the message is for the user."""


class VideoError(Exception):
    """A video cannot be read or written; the message is meant for users (raised by :mod:`centrifuge.video`)."""


#: Errors that are the user's input, not our bug: one line, exit status 2, no traceback.
USER_ERRORS = (CentrifugeError, VideoError, CheckpointError, FileNotFoundError, FileExistsError,
               PermissionError, NotADirectoryError, IsADirectoryError, ValueError)


def error_line(e: BaseException) -> str:
    """The one line a user sees for one of :data:`USER_ERRORS`."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    return msg
