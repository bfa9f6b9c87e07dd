"""TFLite: the op table (opmap), the flatbuffer reader and writer, sparse-weight decoding."""
