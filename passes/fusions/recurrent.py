"""Unrolled LSTM and GRU cells -> one ai.onnx ``LSTM`` / ``GRU`` node.

Exporters unroll recurrent layers into one cell per time step (a
``torch.nn.LSTMCell`` / ``GRUCell`` loop, Keras with ``unroll=True``, TFLite's
clipped LSTM lowering). Gate pre-activations are recognized as a sum of linear
terms: any Add tree of MatMul, MatMulAct without activation, Gemm (transA 0)
with constant weights, constant biases, or one MatMul over ``Concat(x_t, h)``.
Gates come out of a Split along the last axis (equal parts, in any order).
Every Add/Mul may have its operands in either order.

LSTM step (``x_t`` a time slice of a 3-D ``X``)::

    gi, gf, gc, go = Split(x_t @ Wx + h @ Rh + b, 4)
    c' = Sigmoid(gf) * c + Sigmoid(gi) * Tanh(gc)
    h' = Sigmoid(go) * Tanh(c')

GRU step (``torch.nn.GRUCell``, Keras ``reset_after=True``: ONNX GRU with
``linear_before_reset=1``)::

    xz, xr, xn = Split(x_t @ Wx + bx, 3);   hz, hr, hn = Split(h @ Rh + bh, 3)
    z = Sigmoid(xz + hz);   r = Sigmoid(xr + hr);   n = Tanh(xn + r * hn)
    h' = (1 - z) * n + z * h         or         h' = n + z * (h - n)

A chain of T such cells, step t reading the state of step t-1 and ``x_t``
(``Gather(X, t, axis)`` or ``Squeeze(Split(X)[t], axis)``) for t = 0..T-1,
T the whole time axis of X, all with the same weights, becomes one node
(``layout`` = the time axis: 0 for [T, B, I], 1 for [B, T, I]), weights in
ONNX gate order (LSTM i, o, f, c; GRU z, r, h), ``B`` the input-side bias
followed by the recurrent-side one. The stacked sequence
``Concat(Unsqueeze(h_t, axis) for t)`` becomes ``Squeeze(Y)`` over the
direction axis, the last ``h``/``c`` ``Squeeze(Y_h)``/``Squeeze(Y_c)``.
Initial states are left out when they are zero constants (a zero ``h0``
whose ``h0 @ R`` was constant-folded into step 0's bias included), else
unsqueezed to ``[1, B, H]`` (``[B, 1, H]`` for layout 1).

Refused when an intermediate (a gate, an earlier step's ``c``, an earlier
``h`` other than through the stacked sequence) is read elsewhere or is a graph
output, when weights differ between steps, or when a cell computes anything
else (e.g. TFLite's clip of ``c``: ONNX LSTM's ``clip`` clips the gates, not
the cell state). ONNX LSTM/GRU nodes are left as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ir import Graph, Node, Value
from passes.base import Pass
from passes.fusions.engine import Const, Op, Pattern, Var

__all__ = ["FuseRecurrent"]

logger = logging.getLogger(__name__)

_LSTM_ROLES = ("i", "o", "f", "c")  # ONNX gate orders
_GRU_ROLES = ("z", "r", "n")


def _lstm_pattern() -> Op:
    fc = Op("Mul", Op("Sigmoid", Var("gf"), name="f"), Var("c_prev"), name="fc", commute=True)
    g = Op("Tanh", Var("gc"), name="g")
    ig = Op("Mul", Op("Sigmoid", Var("gi"), name="i"), g, name="ig", commute=True)
    c_new = Op("Add", fc, ig, name="c", commute=True)
    return Op("Mul", Op("Sigmoid", Var("go"), name="o"), Op("Tanh", c_new, name="tc"),
              name="h", commute=True)  # fmt: skip


def _gru_patterns() -> list[Op]:
    z = Op("Sigmoid", Op("Add", Var("xz"), Var("hz"), name="z_add"), name="z")
    r = Op("Sigmoid", Op("Add", Var("xr"), Var("hr"), name="r_add"), name="r")
    rh = Op("Mul", r, Var("hn"), name="rh", commute=True)
    n = Op("Tanh", Op("Add", Var("xn"), rh, name="n_add", commute=True), name="n")
    h = Var("h_prev")
    one_minus_z = Op("Sub", Const("one", 1.0), z, name="omz")
    return [
        Op("Add", Op("Mul", one_minus_z, n, name="a1", commute=True),
           Op("Mul", z, h, name="a2", commute=True), name="h", commute=True),
        Op("Add", n, Op("Mul", z, Op("Sub", h, n, name="hmn"), name="a2", commute=True),
           name="h", commute=True),
    ]  # fmt: skip


_LSTM = _lstm_pattern()
_GRU = _gru_patterns()


def _bound_nodes(pattern: Pattern, b: dict) -> list[Node]:
    names = list(pattern.op_names()) if isinstance(pattern, Op) else []
    seen: dict[int, Node] = {}
    for name in names:
        node = b.get(name)
        if isinstance(node, Node):
            seen.setdefault(id(node), node)
    return list(seen.values())


@dataclass
class _Term:
    x: Value
    w: np.ndarray  # [in, G*H], float64, the cell's own gate order


Gates = Callable[[np.ndarray], np.ndarray]
"""[in, G*H] in a cell's gate order -> [G*H, in] in ONNX order."""


@dataclass
class _Cell:
    op: str  # "LSTM" or "GRU"
    h: Value
    terms: list[_Term]
    hidden: int
    nodes: list[Node]
    x_gates: Gates
    h_gates: Gates
    bias: np.ndarray  # ONNX B without the leading direction axis: [2 * G * H]
    c: Value | None = None
    c_prev: Value | None = None
    h_prev: Value | None = None  # GRU: the state in the update formula
    x: _Term | None = None
    r: _Term | None = None


def _gates_fn(outs: list[int], gates: dict[str, Value], roles: tuple[str, ...],
              hidden: int) -> Gates:  # fmt: skip
    slots = [outs.index(id(gates[r])) for r in roles]

    def onnx(w: np.ndarray) -> np.ndarray:
        return np.concatenate([w[:, s * hidden : (s + 1) * hidden].T for s in slots])

    return onnx


# -- one cell ---------------------------------------------------------------------------------
def _const_vector(v: Value, n: int) -> np.ndarray | None:
    """A constant bias over the last axis (rows of a [.., n] constant must be equal)."""
    c = v.const
    if c is None or not np.issubdtype(c.dtype, np.floating) or c.size == 0:
        return None
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]))
    if c.shape[-1] != n:
        return None
    rows = c.reshape(-1, n).astype(np.float64)
    return rows[0] if np.array_equal(rows, np.broadcast_to(rows[0], rows.shape)) else None


def _linear(v: Value, n: int, graph: Graph) -> tuple[list[_Term], np.ndarray, list[Node]] | None:
    """``v`` as a sum of linear terms on non-constant values plus a bias, with its nodes."""
    if v.const is not None:
        bias = _const_vector(v, n)
        return None if bias is None else ([], bias, [])
    node = v.producer
    if node is None or node.graph is not graph or len(node.outputs) != 1:
        return None
    if node.op == "Add":
        parts = [_linear(a, n, graph) for a in node.inputs if a is not None]
        if len(parts) != 2 or any(p is None for p in parts):
            return None
        (t1, b1, n1), (t2, b2, n2) = parts  # type: ignore[misc]
        return [*t1, *t2], b1 + b2, [*n1, *n2, node]
    term = _matmul_term(node, n)
    if term is None:
        return None
    x, w, bias = term
    terms = _split_concat(x, w, graph)
    if terms is None:
        return None
    nodes = [node] + ([x.producer] if len(terms) == 2 else [])  # type: ignore[list-item]
    return terms, bias, nodes


def _matmul_term(node: Node, n: int) -> tuple[Value, np.ndarray, np.ndarray] | None:
    """(input, W [in, n] float64, bias [n]) of a MatMul/MatMulAct/Gemm with constant weights."""
    x, w = node.input(0), node.input(1)
    if x is None or w is None or w.const is None or w.const.ndim != 2:
        return None
    mat = w.const.astype(np.float64)
    bias = np.zeros(n)
    if node.op == "MatMulAct":
        if node.attr("activation") != "none":
            return None
        if node.input(2) is not None:
            b = _const_vector(node.input(2), n)  # type: ignore[arg-type]
            if b is None:
                return None
            bias = b
    elif node.op == "Gemm":
        if node.attr("transA"):
            return None
        mat = mat.T * float(node.attr("alpha")) if node.attr("transB") else mat * float(
            node.attr("alpha"))  # fmt: skip
        if node.input(2) is not None:
            b = _const_vector(node.input(2), n)  # type: ignore[arg-type]
            if b is None:
                return None
            bias = b * float(node.attr("beta"))
    elif node.op != "MatMul":
        return None
    if mat.shape[1] != n:
        return None
    return x, mat, bias


def _split_concat(x: Value, w: np.ndarray, graph: Graph) -> list[_Term] | None:
    """One term, or two for a MatMul over ``Concat(a, b)`` along the feature axis."""
    node = x.producer
    if node is None or node.op != "Concat" or node.graph is not graph or len(node.inputs) != 2:
        return [_Term(x, w)]
    a, b = node.inputs
    if a is None or b is None or a.rank != 2 or b.rank != 2 or int(node.attr("axis")) % 2 != 1:
        return [_Term(x, w)]
    width = a.shape[1]  # type: ignore[index]
    if not isinstance(width, int) or b.shape[1] != w.shape[0] - width:  # type: ignore[index]
        return None
    return [_Term(a, w[:width]), _Term(b, w[width:])]


def _gate_split(values: list[Value], graph: Graph) -> tuple[Node, list[int], int] | None:
    """The Split node producing ``values`` (distinct outputs, equal parts, last axis),
    its output ids and the part size."""
    split = values[0].producer
    if split is None or split.op != "Split" or split.graph is not graph:
        return None
    outs = [id(o) for o in split.outputs]
    if len(outs) != len(values) or {id(v) for v in values} != set(outs):
        return None
    g_in = split.input(0)
    if g_in is None or g_in.rank != 2 or int(split.attr("axis")) % 2 != 1:
        return None
    width = g_in.shape[1]  # type: ignore[index]
    if not isinstance(width, int) or width % len(outs):
        return None
    part = width // len(outs)
    sizes = split.input(1)
    if sizes is not None and (sizes.const is None
                              or list(sizes.const.reshape(-1)) != [part] * len(outs)):  # fmt: skip
        return None
    return split, outs, part


def _lstm_cell(b: dict, graph: Graph) -> _Cell | None:
    gates = {role: b[f"g{role}"] for role in _LSTM_ROLES}
    found = _gate_split(list(gates.values()), graph)
    if found is None:
        return None
    split, outs, hidden = found
    lin = _linear(split.input(0), 4 * hidden, graph)  # type: ignore[arg-type]
    if lin is None or len(lin[0]) not in (1, 2):
        return None
    terms, bias, nodes = lin
    if len(terms) == 2 and terms[0].x is terms[1].x:
        return None
    fn = _gates_fn(outs, gates, _LSTM_ROLES, hidden)
    b_onnx = np.concatenate([fn(bias[None]).reshape(-1), np.zeros(4 * hidden)])
    cell_nodes = [*nodes, split, *_bound_nodes(_LSTM, b)]
    return _Cell("LSTM", b["h"].outputs[0], terms, hidden, cell_nodes, fn, fn, b_onnx,
                 c=b["c"].outputs[0], c_prev=b["c_prev"])  # fmt: skip


def _gru_cell(b: dict, pattern: Op, graph: Graph) -> _Cell | None:
    xs = {"z": b["xz"], "r": b["xr"], "n": b["xn"]}
    hs = {"z": b["hz"], "r": b["hr"], "n": b["hn"]}
    sx = b["xn"].producer
    for role in ("z", "r"):  # the Adds may read the two sides in either order
        if xs[role].producer is not sx:
            xs[role], hs[role] = hs[role], xs[role]
    found = _gate_split(list(xs.values()), graph)
    if found is None:
        return None
    split_x, outs_x, hidden = found
    lin_x = _linear(split_x.input(0), 3 * hidden, graph)  # type: ignore[arg-type]
    if lin_x is None or len(lin_x[0]) != 1:
        return None
    x_gates = _gates_fn(outs_x, xs, _GRU_ROLES, hidden)
    nodes = [*lin_x[2], split_x, *_bound_nodes(pattern, b)]
    terms = list(lin_x[0])
    if all(v.const is not None for v in hs.values()):  # zero h0: h0 @ R + bh folded
        parts = [_const_vector(hs[r], hidden) for r in _GRU_ROLES]
        if any(p is None for p in parts):
            return None
        h_gates: Gates = x_gates
        bh = np.concatenate(parts)  # type: ignore[arg-type]
    else:
        found_h = _gate_split(list(hs.values()), graph)
        if found_h is None or found_h[2] != hidden:
            return None
        split_h, outs_h, _ = found_h
        lin_h = _linear(split_h.input(0), 3 * hidden, graph)  # type: ignore[arg-type]
        if lin_h is None or len(lin_h[0]) != 1 or lin_h[0][0].x is not b["h_prev"]:
            return None
        h_gates = _gates_fn(outs_h, hs, _GRU_ROLES, hidden)
        terms += lin_h[0]
        nodes += [*lin_h[2], split_h]
        bh = h_gates(lin_h[1][None]).reshape(-1)
    b_onnx = np.concatenate([x_gates(lin_x[1][None]).reshape(-1), bh])
    cell = _Cell("GRU", b["h"].outputs[0], terms, hidden, nodes, x_gates, h_gates, b_onnx,
                 h_prev=b["h_prev"])  # fmt: skip
    cell.x, cell.r = terms[0], terms[1] if len(terms) == 2 else None
    return cell


def _cell_at(node: Node, graph: Graph) -> _Cell | None:
    if node.op == "Mul":
        for b in _LSTM.match_node(node, {}):
            cell = _lstm_cell(b, graph)
            if cell is not None:
                return cell
    if node.op == "Add":
        for pattern in _GRU:
            for b in pattern.match_node(node, {}):
                cell = _gru_cell(b, pattern, graph)
                if cell is not None:
                    return cell
    return None


# -- time slices ------------------------------------------------------------------------------
def _time_slice(v: Value) -> tuple[Value, int, int] | None:
    """(X, axis, t) when ``v`` is step t of a 3-D ``X`` along ``axis`` 0 or 1."""
    node = v.producer
    if node is None:
        return None
    if node.op == "Gather":
        x, idx = node.input(0), node.input(1)
        if x is None or x.rank != 3 or idx is None or idx.const is None or idx.const.ndim != 0:
            return None
        axis = int(node.attr("axis")) % 3
        steps = x.shape[axis]  # type: ignore[index]
        if axis == 2 or not isinstance(steps, int):
            return None
        return x, axis, int(idx.const) % steps
    if node.op == "Squeeze":
        src, axes = node.input(0), node.input(1)
        split = None if src is None else src.producer
        if split is None or split.op != "Split" or axes is None or axes.const is None:
            return None
        x = split.input(0)
        if x is None or x.rank != 3:
            return None
        axis = int(split.attr("axis")) % 3
        if [int(a) % 3 for a in axes.const.reshape(-1)] != [axis] or axis == 2:
            return None
        if x.shape[axis] != len(split.outputs) or any(o.shape is None or o.shape[axis] != 1
                                                      for o in split.outputs):  # fmt: skip
            return None
        return x, axis, [id(o) for o in split.outputs].index(id(src))
    return None


# -- chains -----------------------------------------------------------------------------------
def _previous(cell: _Cell, by_h: dict[int, _Cell]) -> _Cell | None:
    """The cell whose state ``cell`` reads (resolving an LSTM cell's x/h terms)."""
    if cell.op == "GRU":
        prev = by_h.get(id(cell.h_prev))
        ok = prev is not None and prev.op == "GRU" and cell.r is not None
        return prev if ok and cell.r.x is prev.h else None  # type: ignore[union-attr]
    for k, term in enumerate(cell.terms):
        prev = by_h.get(id(term.x))
        if prev is not None and prev.op == "LSTM" and cell.c_prev is prev.c:
            if len(cell.terms) == 2:
                cell.r, cell.x = term, cell.terms[1 - k]
                return prev
    return None


def _chains(graph: Graph) -> list[list[_Cell]]:
    cells = [c for c in (_cell_at(n, graph) for n in graph if n.op in ("Mul", "Add")) if c]
    by_h = {id(c.h): c for c in cells}
    nexts: dict[int, list[_Cell]] = {}
    has_prev: set[int] = set()
    for cell in cells:
        prev = _previous(cell, by_h)
        if prev is not None:
            nexts.setdefault(id(prev), []).append(cell)
            has_prev.add(id(cell))
    chains = []
    for cell in cells:
        if id(cell) in has_prev:
            continue
        if cell.op == "LSTM":
            slices = [_time_slice(t.x) for t in cell.terms]
            if sum(s is not None for s in slices) != 1:
                continue
            k = 0 if slices[0] is not None else 1
            cell.x = cell.terms[k]
            cell.r = cell.terms[1 - k] if len(cell.terms) == 2 else None  # folded zero h0
        chain = [cell]
        while len(nexts.get(id(chain[-1]), [])) == 1:
            chain.append(nexts[id(chain[-1])][0])
        chains.append(chain)
    return chains


@dataclass
class _Plan:
    x: Value
    axis: int
    w: np.ndarray
    r: np.ndarray
    b: np.ndarray
    h0: Value | None
    c0: Value | None
    stack: Node | None  # the Concat of the unsqueezed h_t
    collectors: list[Node] = field(default_factory=list)


def _plan(chain: list[_Cell], top: Graph) -> _Plan | str:
    """The node replacing ``chain``, or why not."""
    first = chain[0]
    sl = [None if c.x is None else _time_slice(c.x.x) for c in chain]
    if any(s is None for s in sl):
        return "a step input is not a time slice"
    x, axis, _ = sl[0]  # type: ignore[misc]
    if any(s[0] is not x or s[1] != axis for s in sl):  # type: ignore[index]
        return "the steps read different inputs"
    if [s[2] for s in sl] != list(range(len(chain))):  # type: ignore[index]
        return "the steps do not read X's time slices in order"
    if x.shape[axis] != len(chain):  # type: ignore[index]
        return f"{len(chain)} steps for a time axis of {x.shape[axis]}"  # type: ignore[index]
    if not x.dtype.is_float:
        return "X is not float"
    if first.r is None and len(chain) < 2:
        return "a single step without a recurrent term"
    r_cell = first if first.r is not None else chain[1]
    w = first.x_gates(first.x.w)  # type: ignore[union-attr]
    r = r_cell.h_gates(r_cell.r.w)  # type: ignore[union-attr]
    b = chain[-1].bias
    for cell in chain:
        if cell.op != first.op or cell.hidden != first.hidden:
            return "the steps differ in kind or hidden size"
        same = np.array_equal(cell.x_gates(cell.x.w), w) and np.array_equal(cell.bias, b)  # type: ignore[union-attr]
        if cell.r is not None:
            same = same and np.array_equal(cell.h_gates(cell.r.w), r)
        if not same:
            return "the steps have different weights (or a nonzero folded initial state)"
    if w.shape[1] != x.shape[2] or r.shape[1] != first.hidden:  # type: ignore[index]
        return "weight shapes do not match X and the hidden size"
    h0 = None if first.r is None else first.r.x
    batch = x.shape[1 - axis]  # type: ignore[index]
    for s in (h0, first.c_prev):
        if s is not None and not _state_ok(s, batch, first.hidden):
            return f"initial state {s.name!r} is not [batch, hidden] (nor zeros)"
    stack, collectors, why = _outputs(chain, axis, top)
    if why:
        return why
    return _Plan(x, axis, w, r, b, h0, first.c_prev, stack, collectors)


def _outputs(chain: list[_Cell], axis: int, top: Graph) -> tuple[Node | None, list[Node], str]:
    """The stacking Concat and its Unsqueezes, after checking no intermediate escapes."""
    inside = {id(n) for c in chain for n in c.nodes}
    outs = {id(v) for g in top.all_graphs() for v in g.outputs}
    last = chain[-1]
    collectors: list[Node] = []
    for cell in chain:
        for node in cell.nodes:
            for v in node.outputs:
                if v is last.h or v is last.c:
                    continue
                if id(v) in outs:
                    return None, [], f"{v.name!r} is a graph output"
                for user in v.consumers():
                    if id(user) in inside:
                        continue
                    if v is cell.h and _unsqueezes(user, axis):
                        collectors.append(user)
                        continue
                    return None, [], f"{v.name!r} is also read by {user.name!r}"
    unsq = [u for u in last.h.consumers() if id(u) not in inside and _unsqueezes(u, axis)]
    if not collectors and not unsq:
        return None, [], ""
    collectors += unsq[:1]
    stack = _stack(collectors, chain, axis)
    if stack is None:
        return None, [], "the step outputs are not stacked in order along the time axis"
    return stack, collectors, ""


def _unsqueezes(node: Node, axis: int) -> bool:
    axes = node.input(1)
    return (node.op == "Unsqueeze" and axes is not None and axes.const is not None
            and [int(a) for a in axes.const.reshape(-1)] in ([axis], [axis - 3]))  # fmt: skip


def _stack(collectors: list[Node], chain: list[_Cell], axis: int) -> Node | None:
    if len(collectors) != len(chain):
        return None
    users = collectors[0].outputs[0].consumers()
    if len(users) != 1 or users[0].op != "Concat" or int(users[0].attr("axis")) % 3 != axis:
        return None
    cat = users[0]
    order = [u.outputs[0] for u in collectors]
    if list(cat.inputs) != order or any(len(v.uses) != 1 for v in order):
        return None
    if any(u.input(0) is not c.h for u, c in zip(collectors, chain, strict=True)):
        return None
    return cat


def _state_ok(v: Value, batch: object, hidden: int) -> bool:
    if v.const is not None and not np.any(v.const):
        return True
    return v.rank == 2 and v.shape[0] == batch and v.shape[1] == hidden  # type: ignore[index]


# -- rewrite ----------------------------------------------------------------------------------
def _state(v: Value | None, axis: int, top: Graph, new: list[Node]) -> Value | None:
    """An initial state for the node ([1, B, H] / [B, 1, H]); None for zeros."""
    if v is None or (v.const is not None and not np.any(v.const)):
        return None
    axes = Value(top.unique_name(f"{v.name}_axis"), const=np.asarray([axis], np.int64))
    out = Value(top.unique_name(f"{v.name}_state"), v.dtype)
    new.append(Node("Unsqueeze", [v, axes], [out], name=top.unique_name(f"{v.name}_unsqueeze")))
    return out


def _rewrite(chain: list[_Cell], plan: _Plan, graph: Graph, top: Graph) -> Node:
    dtype = plan.x.dtype.numpy
    first, last = chain[0], chain[-1]
    op = first.op
    base = top.unique_name(f"{last.h.producer.name}_{op.lower()}")  # type: ignore[union-attr]
    new: list[Node] = []
    states = [_state(plan.h0, plan.axis, top, new)]
    if op == "LSTM":
        states.append(_state(plan.c0, plan.axis, top, new))
    consts = [Value(top.unique_name(f"{base}_{n}"), const=np.ascontiguousarray(a[None], dtype))
              for n, a in (("W", plan.w), ("R", plan.r), ("B", plan.b))]  # fmt: skip
    names = ("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")
    ys = [Value(top.unique_name(f"{base}_{n}"), plan.x.dtype) for n in names]
    attrs: dict = {"hidden_size": first.hidden, "layout": plan.axis}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    node = Node(op, [plan.x, *consts, None, *states], ys, name=base, attrs=attrs)
    new.append(node)
    doomed = [n for c in chain for n in c.nodes] + plan.collectors
    doomed += [plan.stack] if plan.stack is not None else []
    ids = {id(n) for n in doomed}
    replace: list[tuple[Value, Value]] = []
    if plan.stack is not None:
        replace.append((plan.stack.outputs[0], _squeeze(ys[0], plan.axis + 1, top, new)))
    for old, y in zip((last.h, last.c), ys[1:], strict=False):
        if old is None:
            continue
        read = any(id(user) not in ids for user in old.consumers())
        if read or any(old is o for g in top.all_graphs() for o in g.outputs):
            replace.append((old, _squeeze(y, plan.axis, top, new)))
    graph.insert_before(next(n for n in graph.nodes if id(n) in ids), new)
    for old, v in replace:
        v.shape = old.shape
        old.replace_all_uses_with(v, top)
    graph.remove(doomed)
    for old, v in replace:
        v.name = old.name
    graph.sort()
    return node


def _squeeze(v: Value, axis: int, top: Graph, new: list[Node]) -> Value:
    axes = Value(top.unique_name(f"{v.name}_axes"), const=np.asarray([axis], np.int64))
    out = Value(top.unique_name(f"{v.name}_squeezed"), v.dtype)
    new.append(Node("Squeeze", [v, axes], [out], name=top.unique_name(f"{v.name}_squeeze")))
    return out


class FuseRecurrent(Pass):
    """Replace chains of unrolled LSTM/GRU cells by one LSTM/GRU node."""

    name = "FuseRecurrent"

    def run(self, graph: Graph) -> bool:
        changed = False
        for g in list(graph.all_graphs()):
            for chain in _chains(g):
                plan = _plan(chain, graph)
                if isinstance(plan, str):
                    logger.debug("unrolled %s at %s: %s", chain[0].op, chain[0].h.name, plan)
                    continue
                node = _rewrite(chain, plan, g, graph)
                logger.debug("%d unrolled %s steps -> %s", len(chain), node.op, node.name)
                changed = True
        return changed
