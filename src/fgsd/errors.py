"""One exception type for every user-facing failure, so the CLI can print one clear line."""


class FgsdError(Exception):
    """A bad input (file, image, parameter) that the user can fix; the message names the culprit."""
