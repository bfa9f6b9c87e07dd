"""ONNX: the op table (opmap), the reader of emitted files and the writer (float and QOperator int8)."""
