"""Frontends: read a model file into an IR graph.

`load` sniffs the file's content, not its name, and dispatches to the reader for that format. Importing this
package imports no framework: each reader imports its framework (torch, flatbuffers) when it is called.
"""

from .loader import load

__all__ = ["load"]
