"""Write the bundled example models (`python -m mcc.examples.build`): the zoo's MobileNetV2-style net as .pt2.

The .pt2 is committed so that the README's first command compiles a real file without any download; this script
is how it was made, and remakes it after the zoo changes. torch.export records each node's stack trace with the
absolute paths of the machine that exported it; a committed file must not carry those, so they are dropped
(mcc then names the FX node where it would have named file:line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .zoo import ZOO

BUNDLED = ("mobilenet_v2_style",)


def main(folder: Path = Path(__file__).parent) -> int:
    for name in BUNDLED:
        model, example = ZOO[name]()
        program = torch.export.export(model, (example,))
        for node in program.graph.nodes:
            node.meta.pop("stack_trace", None)
        path = folder / f"{name}.pt2"
        torch.export.save(program, path)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
