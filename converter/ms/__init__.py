"""The ``.ms`` file format: MindSpore Lite FlatBuffers schema v2 (identifier ``MSL2``).

``write_ms``/``serialize`` turn an IR graph into a .ms model, ``read_ms``
reads one back; docs/format.md describes what is written and how.
"""

from __future__ import annotations

from converter.ms.fbs import MsFormatError
from converter.ms.reader import read_ms
from converter.ms.writer import serialize, write_ms

__all__ = ["MsFormatError", "read_ms", "serialize", "write_ms"]
