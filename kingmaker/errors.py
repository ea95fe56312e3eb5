"""The two kinds of failure (CONTRIBUTING.md, "Errors").

`PermanentError` means the input or configuration is wrong: report it in one line and stop,
retrying will not help. `TemporaryError` means something we depend on is unavailable right now
(a tracking server, Prometheus, the API server): retry with backoff.
"""


class KingmakerError(Exception):
    """Base class: the message is one readable line meant for the user."""


class PermanentError(KingmakerError):
    """Bad input, bad configuration or a missing model version: do not retry."""


class TemporaryError(KingmakerError):
    """A dependency is unreachable or overloaded: retry later."""
