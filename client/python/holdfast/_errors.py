"""The exception every holdfast call raises."""

from __future__ import annotations

__all__ = ["HoldfastError"]


class HoldfastError(RuntimeError):
    """A failed holdfast call: the daemon's (or the library's) status and message.

    ``code`` is the numeric status (equal to gRPC's), ``code_name`` its name, e.g.
    ``"UNAVAILABLE"`` when holdfastd is not running, ``"NOT_FOUND"`` when no snapshot exists,
    ``"DATA_LOSS"`` when restored bytes do not match their checksums.
    """

    def __init__(self, code: int, code_name: str, message: str) -> None:
        super().__init__(code, code_name, message)
        self.code = code
        self.code_name = code_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"
