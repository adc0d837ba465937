"""Errors every front end raises.

- :class:`BadModelError`: the input is not a readable, well-formed model (missing or
  truncated file, wrong format, external data escaping the model folder, a node reading
  a value nobody defines).
- :class:`UnsupportedModelError`: a valid model that uses something liteconv cannot
  convert (ops outside the IR vocabulary, attributes the IR does not know). Front ends
  parse the whole model first and raise one error listing every problem.
- :class:`InputShapeError`: user-given input shapes that do not fit the model.

All derive from :class:`ParseError`, so callers (the CLI) catch one type.
"""

from __future__ import annotations

__all__ = ["BadModelError", "InputShapeError", "ParseError", "UnsupportedModelError"]


class ParseError(Exception):
    """A model could not be turned into an IR graph."""


class BadModelError(ParseError):
    """The model file or message is unreadable or malformed."""


class UnsupportedModelError(ParseError):
    """The model is valid but uses ops or features the IR cannot express.

    ``ops`` maps each unsupported op type (``domain::Op`` outside the default domain) to
    the name of one node using it; ``problems`` lists other issues, one sentence each.
    """

    def __init__(
        self, message: str, ops: dict[str, str] | None = None, problems: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.ops: dict[str, str] = dict(ops or {})
        self.problems: list[str] = list(problems or [])

    @classmethod
    def from_findings(
        cls, ops: dict[str, str], problems: list[str], fmk: str
    ) -> UnsupportedModelError:
        """One error summarising every unsupported op and every other problem."""
        parts = []
        if ops:
            listed = ", ".join(f"{op} (node {node!r})" for op, node in ops.items())
            parts.append(f"unsupported {fmk} ops ({len(ops)}): {listed}")
        if problems:
            parts.append(f"unsupported features ({len(problems)}): " + "; ".join(problems))
        return cls("; ".join(parts), ops, problems)


class InputShapeError(ParseError, ValueError):
    """Input shapes given by the user do not match the model's inputs."""
