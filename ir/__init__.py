"""The IR: one typed dataflow graph that every frontend writes, every pass rewrites and every backend reads."""

from .graph import Graph
from .node import Node
from .ops import OPS, infer_node, macs
from .tensor import QuantParams, Tensor

__all__ = ["Graph", "Node", "Tensor", "QuantParams", "OPS", "infer_node", "macs"]
