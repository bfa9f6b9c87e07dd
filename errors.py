"""The one error type a user sees: a message that names the file, node or op and what to do.

The CLI prints it as one paragraph and exits with `exit_code` (2 for bad input), so every layer raises
MccError instead of letting a library's traceback reach the user.
"""


class MccError(Exception):
    exit_code = 2

    def __init__(self, message: str, *, path=None, node=None):
        self.path = str(path) if path is not None else None
        self.node = node
        prefix = f"{self.path}: " if self.path else ""
        where = f"node '{node}': " if node else ""
        super().__init__(prefix + where + message)
