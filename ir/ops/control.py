"""Control flow: If, Loop, Scan (ONNX semantics; bodies are ir.Graph attributes).

Body graphs may read values of enclosing graphs directly (outer scope).
"""

from __future__ import annotations

from ir.core import Node
from ir.ops.base import GRAPH, INT, INTS, REQUIRED, Trait, op
from ir.ops.infer import Result


def _infer_if(node: Node) -> Result:
    then = node.attrs["then_branch"]
    els = node.attrs["else_branch"]
    out: Result = []
    for a, b in zip(then.outputs, els.outputs, strict=False):
        shape = a.shape if a.shape == b.shape else None
        out.append((a.dtype, shape))
    return out


def _infer_loop(node: Node) -> Result:
    body = node.attrs["body"]
    n_carried = len(node.inputs) - 2
    out: Result = []
    for i, v in enumerate(body.outputs[1:]):
        if i < n_carried:
            init = node.input(2 + i)
            same = init is not None and init.shape == v.shape
            out.append((v.dtype, v.shape if same else None))
        else:
            out.append((v.dtype, None if v.shape is None else (None, *v.shape)))
    return out


def _infer_scan(node: Node) -> Result:
    body = node.attrs["body"]
    n_scan_in = node.attr("num_scan_inputs")
    n_state = len(node.inputs) - n_scan_in
    out: Result = []
    for i, v in enumerate(body.outputs):
        out.append((v.dtype, v.shape if i < n_state else None))
    return out


CF = {Trait.CONTROL_FLOW}

OPS = (
    op(
        "If",
        "cond",
        "outputs*",
        attrs={"then_branch": GRAPH(REQUIRED), "else_branch": GRAPH(REQUIRED)},
        traits=CF,
        infer=_infer_if,
    ),
    op(
        "Loop",
        "M? cond? v_initial*",
        "v_final_and_scan_outputs*",
        attrs={"body": GRAPH(REQUIRED)},
        traits=CF,
        infer=_infer_loop,
    ),
    op(
        "Scan",
        "initial_state_and_scan_inputs*",
        "final_state_and_scan_outputs*",
        attrs={
            "body": GRAPH(REQUIRED),
            "num_scan_inputs": INT(REQUIRED),
            "scan_input_axes": INTS(None),
            "scan_input_directions": INTS(None),
            "scan_output_axes": INTS(None),
            "scan_output_directions": INTS(None),
        },
        traits=CF,
        infer=_infer_scan,
    ),
)
