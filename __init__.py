"""mcc: the model compression compiler for edge devices.

load (frontend) -> IR graph -> passes -> emit (backend) -> validate (runtime). See README.md.
"""

__version__ = "0.1.0"
