"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class CentrifugeError(Exception):
    """Bad input or an impossible request; the message is for the user."""
