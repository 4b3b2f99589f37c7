"""The exceptions slmops raises, and which of them stop a whole sweep.

A ``SpecError`` or ``InputError`` is the user's to fix and stops everything before work starts (exit 2).
A ``VariantError`` fails one variant: it is recorded and the sweep goes on.
A ``TransientError`` is worth retrying (a tracking server that hiccups, a busy file).
"""


class SlmopsError(Exception):
    """Base class of every error slmops raises on purpose."""

    exit_code = 1


class SpecError(SlmopsError):
    """The sweep spec is invalid: what is wrong and what is allowed."""

    exit_code = 2


class InputError(SlmopsError):
    """The source model (or another input) cannot be used."""

    exit_code = 2


class VariantError(SlmopsError):
    """One variant could not be built or did not pass its checks."""


class TransientError(SlmopsError):
    """A failure that may pass on retry."""


class ToolchainError(SlmopsError):
    """Installed tool versions do not work together."""


class TrackingLostError(SlmopsError):
    """The tracking server went away mid-sweep; the variants are complete on disk and `slmops sync` logs them."""
