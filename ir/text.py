"""The IR's text form: one line per input, constant, node and output, readable in a diff and loadable back.

    mcc-ir 1 main
    input  x: float32[1,3,32,32] @NCHW
    const  conv1.weight: float32[8,3,3,3] = b64:...        (summary mode: sha256:1f2e... min=-0.41 max=0.39)
    node   conv1 = conv2d(x, conv1.weight, conv1.bias) {"activation":null,...} -> conv1: float32[1,8,32,32] @NCHW
    output conv1

Attributes and quantization parameters are JSON so that the loader is a small tokenizer, not a grammar.
Names made only of word characters, dots, slashes and dashes are written bare, others JSON-quoted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np

from .graph import Graph
from .node import Node
from .tensor import QuantParams, Tensor

_BARE = re.compile(r"^[\w./-]+$")


def _name(n: str) -> str:
    return n if _BARE.match(n) else json.dumps(n)


def _type(t: Tensor) -> str:
    s = f"{t.dtype}[{','.join(map(str, t.shape))}]"
    if t.layout:
        s += f" @{t.layout}"
    if t.quant is not None:
        s += " q" + json.dumps(t.quant.to_json(), separators=(",", ":"))
    return s


def _const(t: Tensor, inline: bool) -> str:
    raw = np.ascontiguousarray(t.data).tobytes()
    if inline:
        return "b64:" + base64.b64encode(raw).decode()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    stats = f" min={float(t.data.min()):.6g} max={float(t.data.max()):.6g}" if t.data.size else ""
    return f"sha256:{digest}{stats}"


def dumps(graph: Graph, inline_constants: bool = False) -> str:
    """Text of `graph`; with `inline_constants` it carries every constant's bytes and loads back exactly."""
    lines = [f"mcc-ir 1 {_name(graph.name)}"]
    lines += [f"input  {_name(t.name)}: {_type(t)}" for t in graph.inputs]
    lines += [f"const  {_name(t.name)}: {_type(t)} = {_const(t, inline_constants)}" for t in graph.constants()]
    for n in graph.nodes:
        ins = ", ".join(_name(i.name) if i is not None else "_" for i in n.inputs)
        outs = ", ".join(f"{_name(o.name)}: {_type(o)}" for o in n.outputs)
        attrs = json.dumps(n.attrs, separators=(",", ":"), sort_keys=True)
        src = f" # {json.dumps(n.source)}" if n.source else ""
        lines.append(f"node   {_name(n.name)} = {n.op}({ins}) {attrs} -> {outs}{src}")
    lines += [f"output {_name(t.name)}" for t in graph.outputs]
    return "\n".join(lines) + "\n"


class _Reader:
    def __init__(self, line: str, lineno: int):
        self.s, self.i, self.lineno = line, 0, lineno

    def fail(self, what):
        raise ValueError(f"IR text line {self.lineno}: expected {what} at column {self.i + 1}: {self.s[self.i:self.i + 40]!r}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def lit(self, text):
        self.ws()
        if not self.s.startswith(text, self.i):
            self.fail(repr(text))
        self.i += len(text)

    def peek(self, text):
        self.ws()
        return self.s.startswith(text, self.i)

    def json(self):
        self.ws()
        try:
            value, end = json.JSONDecoder().raw_decode(self.s, self.i)
        except json.JSONDecodeError:
            self.fail("JSON")
        self.i = end
        return value

    def name(self):
        self.ws()
        if self.peek('"'):
            return self.json()
        m = re.compile(r"[\w./-]+").match(self.s, self.i)
        if not m:
            self.fail("a name")
        self.i = m.end()
        return m.group(0)

    def type(self):
        self.ws()
        m = re.compile(r"(\w+)\[([-\d,]*)\]").match(self.s, self.i)
        if not m:
            self.fail("a type like float32[1,3]")
        self.i = m.end()
        shape = tuple(int(d) for d in m.group(2).split(",") if d)
        layout = quant = None
        if self.peek("@"):
            self.lit("@")
            layout = self.name()
        if self.peek("q{"):
            self.lit("q")
            quant = QuantParams.from_json(self.json())
        return m.group(1), shape, layout, quant


def loads(text: str) -> Graph:
    """Parse `dumps(graph, inline_constants=True)` back into a Graph."""
    tensors: dict[str, Tensor] = {}
    graph = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        r = _Reader(line, lineno)
        kw = line.split(" ", 1)[0]
        r.i = len(kw)
        if kw == "mcc-ir":
            r.lit("1")
            graph = Graph(r.name())
        elif graph is None:
            r.fail("the header 'mcc-ir 1 NAME'")
        elif kw in ("input", "const"):
            name = r.name()
            r.lit(":")
            dtype, shape, layout, quant = r.type()
            data = None
            if kw == "const":
                r.lit("= b64:")
                r.ws()
                raw = base64.b64decode(r.s[r.i:].strip())
                data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            t = Tensor(name, shape, dtype, layout, quant, data)
            tensors[name] = t
            if kw == "input":
                graph.inputs.append(t)
        elif kw == "node":
            name = r.name()
            r.lit("=")
            op = r.name()
            r.lit("(")
            inputs = []
            while not r.peek(")"):
                if inputs:
                    r.lit(",")
                n = r.name()
                if n != "_" and n not in tensors:
                    r.fail(f"a defined tensor (unknown '{n}')")
                inputs.append(tensors.get(n) if n != "_" else None)
            r.lit(")")
            attrs = r.json()
            r.lit("->")
            outputs = []
            while True:
                oname = r.name()
                r.lit(":")
                dtype, shape, layout, quant = r.type()
                t = Tensor(oname, shape, dtype, layout, quant)
                tensors[oname] = t
                outputs.append(t)
                if not r.peek(","):
                    break
                r.lit(",")
            source = None
            if r.peek("#"):
                r.lit("#")
                source = r.json()
            graph.nodes.append(Node(op, name, inputs, outputs, attrs, source))
        elif kw == "output":
            n = r.name()
            if n not in tensors:
                r.fail(f"a defined tensor (unknown '{n}')")
            graph.outputs.append(tensors[n])
        else:
            r.fail("input, const, node or output")
    if graph is None:
        raise ValueError("IR text is empty")
    return graph
