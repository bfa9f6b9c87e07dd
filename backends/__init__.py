"""Writers of deployable files (TFLite, ONNX) from a lowered IR graph; they emit, they never rewrite."""

from ..errors import MccError


def verified_copy(graph, file_format: str):
    """A copy of `graph` that verify() accepts, or an MccError: a writer never emits a malformed graph."""
    g = graph.copy()
    try:
        g.verify()
    except ValueError as e:
        raise MccError(f"graph '{graph.name}' is not well formed, so it cannot be written as {file_format}: "
                       f"{e}") from None
    return g
