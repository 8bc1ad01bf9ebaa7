"""Exceptions shared by every part of the product (model is the package the others build on)."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input, configuration or environment.

    The CLI prints it without a traceback, so the message must name the input, the value seen
    and the fix, e.g. "--model /x: no manifest.json there; train one with `logllm train`".
    """


class ManifestMismatchError(UserError):
    """A detector folder was trained on different base models or preprocessing than configured."""
