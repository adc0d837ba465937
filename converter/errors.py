"""Errors of the product surface and their exit codes.

Exit codes: 2 for bad input or unsupported models, 1 for failed verification.
"""

from __future__ import annotations

__all__ = ["ConvertError", "UsageError", "VerificationFailed"]


class ConvertError(Exception):
    """A conversion cannot proceed; the message is one sentence for the user."""

    exit_code = 2


class UsageError(ConvertError):
    """Bad command-line or API arguments."""


class VerificationFailed(ConvertError):
    """The converted model does not match its source within tolerance."""

    exit_code = 1
