"""Keras LSTM / GRU / SimpleRNN loops -> one IR LSTM / GRU / RNN node.

TensorFlow Lite's converter turns a Keras 3 ``LSTM``/``GRU`` layer into a WHILE loop over
``[counter, time, output list, h(, c), input list]`` (TensorLists lowered to tensors): the
body reads ``x_t = GATHER(input, time)``, computes one cell step and writes ``h`` into the
output list (the rows before ``time``, ``h``, the rows after, concatenated; or the whole
one-row list when only the last state is returned). The body is lowered to IR like any loop
body first; :func:`match_cell` then recognises the step by its math on IR ops:

- LSTM: ``z = x_t@W + h@R + b``; ``i, f, g, o`` = quarters of ``z``;
  ``c' = ra(f)*c + ra(i)*a(g)``; ``h' = ra(o)*a(c')``
- GRU, ``reset_after=True``: ``X = x_t@W + bx`` and ``H = h@R + bh`` cut in thirds
  ``z, r, n``; ``z = ra(Xz + Hz)``, ``r = ra(Xr + Hr)``, ``n = a(Xn + r*Hn)``;
  ``h' = z*h + (1 - z)*n``
- SimpleRNN: ``h' = a(x_t@W + h@R + b)``

with ``ra``/``a`` Sigmoid, Tanh or Relu (the quarters/thirds may come in any order: the
weights are reordered by the part each gate reads). :func:`plan_loop` classifies every loop
variable (new state, output list written at ``time`` or as a whole, counter, unchanged) and
checks that the loop condition runs exactly over the whole sequence. The IR node follows
ONNX: LSTM gates i, o, f, c with ``B = [b, 0]``; GRU gates z, r, h with
``linear_before_reset=1`` and ``B = [bx, bh]``; RNN ``B = [b, 0]``. ``W = kernel^T`` and
``R = recurrent_kernel^T`` (rows reordered per gate); ``X`` is the input list ``[T, B, I]``
(``layout=0``).

Anything else returns None, and the caller lowers the WHILE as a generic IR Loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ir import Graph, Node, Value

__all__ = ["Cell", "LoopPlan", "is_zeros", "match_cell", "plan_loop", "trip_count"]

_ACTS = {"Sigmoid", "Tanh", "Relu"}
BIG = np.iinfo(np.int64).max // 2


@dataclass
class Cell:
    """One recognised recurrent step; ``w``/``r``/``b`` are already in ONNX layout."""

    kind: str  # "LSTM", "GRU" or "RNN"
    x_arg: int  # loop variable holding the input sequence [T, B, I]
    time_arg: int  # loop variable indexing it
    h_arg: int
    h_new: Value
    w: np.ndarray  # [1, G*H, I]
    r: np.ndarray  # [1, G*H, H]
    b: np.ndarray  # [1, 2*G*H]
    acts: list[str]
    c_arg: int | None = None
    c_new: Value | None = None

    @property
    def hidden(self) -> int:
        return int(self.r.shape[2])


@dataclass
class LoopPlan:
    """Role of every loop variable: ``h``, ``c``, ``seq`` (output list written at time),
    ``last`` (one-row output list), ``counter`` (``steps[k]`` added per trip), ``same``."""

    cell: Cell
    roles: list[str]
    steps: dict[int, int] = field(default_factory=dict)


class _Body:
    """Read-only queries over a lowered loop body whose loop variables are ``args``."""

    def __init__(self, graph: Graph, args: Sequence[Value]) -> None:
        self.g = graph
        self.args = {id(v): k for k, v in enumerate(args)}

    def node(self, v: Value) -> Node | None:
        p = v.producer
        return p if p is not None and p.graph is self.g else None

    def src(self, v: Value) -> Value:
        while (nd := self.node(v)) is not None and nd.op == "Identity":
            v = nd.inputs[0]  # type: ignore[assignment]
        return v

    def op(self, v: Value) -> Node | None:
        return self.node(self.src(v))

    def arg(self, v: Value) -> int | None:
        return self.args.get(id(self.src(v)))

    def const(self, v: Value) -> np.ndarray | None:
        """The value of ``v`` when it is constant (through DequantizeLinear/Reshape)."""
        v = self.src(v)
        if v.const is not None:
            return np.asarray(v.const)
        nd = self.node(v)
        if nd is None:
            return None
        if nd.op == "Reshape":
            data, shape = (self.const(i) if i is not None else None for i in nd.inputs[:2])
            return None if data is None or shape is None else data.reshape(shape.astype(int))
        if nd.op == "DequantizeLinear":
            parts = [self.const(i) if i is not None else None for i in nd.inputs]
            if parts[0] is None or parts[1] is None:
                return None
            return _dequantize(parts[0], parts[1], parts[2] if len(parts) > 2 else None,
                               nd.attr("axis"))  # fmt: skip
        return None

    def pair(self, v: Value, op: str) -> tuple[Value, Value] | None:
        nd = self.op(v)
        if nd is None or nd.op != op or len(nd.inputs) != 2 or None in nd.inputs:
            return None
        return nd.inputs[0], nd.inputs[1]  # type: ignore[return-value]

    def act(self, v: Value) -> tuple[str, Value] | None:
        """(ONNX activation name, its input) when ``v`` is an activation's output."""
        nd = self.op(v)
        if nd is None or nd.op not in _ACTS:
            return None
        return nd.op, nd.inputs[0]  # type: ignore[return-value]

    def terms(self, v: Value) -> list[Value]:
        """Summands of an Add tree (through reshapes that only drop or add leading 1s)."""
        nd = self.op(v)
        if nd is not None and nd.op == "Add":
            return [t for i in nd.inputs if i is not None for t in self.terms(i)]
        if nd is not None and nd.op == "Reshape" and _leading_ones_only(nd):
            return self.terms(nd.inputs[0])  # type: ignore[arg-type]
        return [self.src(v)]

    def matmul(self, v: Value) -> tuple[Value, np.ndarray] | None:
        """(data, constant 2-D weight) of ``data @ weight``."""
        nd = self.op(v)
        if nd is None or nd.op != "MatMul":
            return None
        w = self.const(nd.inputs[1])  # type: ignore[arg-type]
        if w is None or w.ndim != 2:
            return None
        return nd.inputs[0], w  # type: ignore[return-value]

    def step_input(self, v: Value) -> tuple[int, int] | None:
        """(sequence arg, time arg) when ``v`` is ``Gather(sequence, time, axis=0)``."""
        nd = self.op(v)
        if nd is None or nd.op != "Gather" or nd.attr("axis") != 0:
            return None
        seq, idx = self.arg(nd.inputs[0]), self.arg(nd.inputs[1])  # type: ignore[arg-type]
        if seq is None or idx is None or nd.inputs[1].shape not in ((), None):  # type: ignore[union-attr]
            return None
        return seq, idx

    def part(self, v: Value, n: int) -> tuple[Value, int] | None:
        """(base, j) when ``v`` is the j-th of ``n`` equal cuts of base's last axis."""
        nd = self.op(v)
        if nd is None or nd.op not in ("Split", "Slice"):
            return None
        base = nd.inputs[0]
        assert base is not None
        if base.shape is None or not base.shape or not isinstance(base.shape[-1], int):
            return None
        rank, width = len(base.shape), int(base.shape[-1])
        if width % n:
            return None
        if nd.op == "Split":
            return self._split_part(nd, v, base, rank, n)
        return self._slice_part(nd, base, rank, width, width // n)

    def _split_part(
        self, nd: Node, v: Value, base: Value, rank: int, n: int
    ) -> tuple[Value, int] | None:
        if nd.attr("axis") % rank != rank - 1 or len(nd.outputs) != n:
            return None
        sizes = self.const(nd.inputs[1]) if len(nd.inputs) > 1 and nd.inputs[1] else None
        if sizes is not None and len(set(sizes.reshape(-1).tolist())) != 1:
            return None
        v = self.src(v)
        j = next(k for k, o in enumerate(nd.outputs) if o is v)
        return self.src(base), j

    def _slice_part(
        self, nd: Node, base: Value, rank: int, width: int, size: int
    ) -> tuple[Value, int] | None:
        consts = [self.const(i) if i is not None else None for i in nd.inputs[1:]]
        consts += [None] * (4 - len(consts))
        starts, ends, axes, steps = consts
        if starts is None or ends is None:
            return None
        if len(nd.inputs) > 3 and nd.inputs[3] is not None and axes is None:
            return None  # computed axes
        n = starts.size
        axes = np.arange(n) if axes is None else axes
        steps = np.ones(n, np.int64) if steps is None else steps
        if np.any(steps != 1):
            return None
        j = None
        for s, e, ax in zip(starts.reshape(-1).tolist(), ends.reshape(-1).tolist(),
                            axes.reshape(-1).tolist(), strict=True):  # fmt: skip
            dim = base.shape[ax % rank]  # type: ignore[index]
            if ax % rank != rank - 1:
                if s != 0 or not (e >= BIG or isinstance(dim, int) and e >= dim):
                    return None
                continue
            s, e = (min(max(x + width if x < 0 else x, 0), width) for x in (s, e))
            if s % size or e - s != size:
                return None
            j = s // size
        return None if j is None else (self.src(base), j)

    def deps(self, v: Value) -> set[int]:
        """Loop variables ``v`` depends on."""
        seen: set[int] = set()
        found: set[int] = set()
        todo = [v]
        while todo:
            x = todo.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if id(x) in self.args:
                found.add(self.args[id(x)])
            nd = self.node(x)
            if nd is not None:
                todo.extend(i for i in nd.inputs if i is not None)
        return found


def _leading_ones_only(nd: Node) -> bool:
    a, b = nd.inputs[0].shape, nd.outputs[0].shape  # type: ignore[union-attr]
    if a is None or b is None:
        return False

    def strip(s: tuple) -> tuple:
        s = tuple(s)
        while s and s[0] == 1:
            s = s[1:]
        return s

    return strip(a) == strip(b) and all(isinstance(d, int) for d in (*a, *b))


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape if scale.size > 1 else ())
    z = 0 if zp is None else zp.astype(np.float32).reshape(shape if zp.size > 1 else ())
    return ((q.astype(np.float32) - z) * s).astype(np.float32)


def _orders(p: tuple[Value, Value] | None) -> Iterator[tuple[Value, Value]]:
    if p is not None:
        yield p
        yield p[1], p[0]


# -- the cell ----------------------------------------------------------------------------
@dataclass
class _Proj:
    """``x_t @ w (+ h @ r) + bias`` as found in a sum of terms."""

    x: tuple[tuple[int, int], np.ndarray] | None = None  # ((seq arg, time arg), W [I, N])
    h: tuple[int, np.ndarray] | None = None  # (h arg, R [H, N])
    bias: np.ndarray | None = None  # [N]


def _projection(bd: _Body, v: Value) -> _Proj | None:
    out = _Proj()
    consts = []
    for t in bd.terms(v):
        mm = bd.matmul(t)
        if mm is not None:
            step = bd.step_input(mm[0])
            if step is not None and out.x is None:
                out.x = (step, mm[1])
                continue
            k = bd.arg(mm[0])
            if k is not None and out.h is None:
                out.h = (k, mm[1])
                continue
            return None
        c = bd.const(t)
        if c is None:
            return None
        consts.append(c)
    width = next((m[1].shape[1] for m in (out.x, out.h) if m is not None), None)
    if width is None:
        return None
    bias = np.zeros(width, np.float32)
    for c in consts:
        if c.size not in (1, width):
            return None
        bias = bias + c.astype(np.float32).reshape(-1)
    out.bias = bias
    return out


def _blocks(m: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Row blocks of ``m`` (``len(order)`` equal ones) in ``order``."""
    parts = np.split(m, len(order), axis=0)
    return np.ascontiguousarray(np.concatenate([parts[j] for j in order], axis=0))


def match_cell(body: Graph, args: Sequence[Value], results: Sequence[Value]) -> Cell | None:
    """The Keras LSTM/GRU step computing one of ``results`` from loop variables ``args``."""
    bd = _Body(body, args)
    for v in results:
        h = bd.src(v)
        cell = _match_lstm(bd, h) or _match_gru(bd, h) or _match_simple(bd, h)
        if cell is not None:
            return cell
    return None


def _match_simple(bd: _Body, h_new: Value) -> Cell | None:
    """SimpleRNN: ``h' = a(x_t@W + h@R + b)`` -> ONNX RNN (``B = [b, 0]``)."""
    a = bd.act(h_new)
    if a is None:
        return None
    proj = _projection(bd, a[1])
    if proj is None or proj.x is None or proj.h is None or proj.bias is None:
        return None
    (x_arg, time_arg), w = proj.x
    h_arg, r = proj.h
    if r.shape[0] != r.shape[1] or w.shape[1] != r.shape[1]:
        return None
    return Cell(
        "RNN", x_arg, time_arg, h_arg, h_new,
        w=np.ascontiguousarray(w.T.astype(np.float32))[None],
        r=np.ascontiguousarray(r.T.astype(np.float32))[None],
        b=np.concatenate([proj.bias, np.zeros_like(proj.bias)])[None].astype(np.float32),
        acts=[a[0]],
    )  # fmt: skip


def _match_lstm(bd: _Body, h_new: Value) -> Cell | None:
    for o_ref, t_ref in _orders(bd.pair(h_new, "Mul")):
        o, t = bd.act(o_ref), bd.act(t_ref)
        if o is None or t is None:
            continue
        c_new = bd.src(t[1])
        for fc, ig in _orders(bd.pair(c_new, "Add")):
            for f_ref, c_ref in _orders(bd.pair(fc, "Mul")):
                f, c_arg = bd.act(f_ref), bd.arg(c_ref)
                if f is None or c_arg is None:
                    continue
                for i_ref, g_ref in _orders(bd.pair(ig, "Mul")):
                    i, g = bd.act(i_ref), bd.act(g_ref)
                    if i is None or g is None or g[0] != t[0] or not i[0] == f[0] == o[0]:
                        continue
                    cell = _lstm_gates(bd, [i[1], f[1], g[1], o[1]], h_new)
                    if cell is not None:
                        cell.acts, cell.c_arg, cell.c_new = [i[0], g[0], t[0]], c_arg, c_new
                        return cell
    return None


def _lstm_gates(bd: _Body, gates: list[Value], h_new: Value) -> Cell | None:
    parts = [bd.part(g, 4) for g in gates]  # i, f, g, o
    if any(p is None for p in parts) or len({id(p[0]) for p in parts}) != 1:  # type: ignore[index]
        return None
    idx = [p[1] for p in parts]  # type: ignore[index]
    if sorted(idx) != [0, 1, 2, 3]:
        return None
    proj = _projection(bd, parts[0][0])  # type: ignore[index]
    if proj is None or proj.x is None or proj.h is None or proj.bias is None:
        return None
    (x_arg, time_arg), w = proj.x
    h_arg, r = proj.h
    hidden = r.shape[0]
    if w.shape[1] != 4 * hidden or r.shape[1] != 4 * hidden:
        return None
    order = [idx[0], idx[3], idx[1], idx[2]]  # ONNX i, o, f, c
    b = _blocks(proj.bias.reshape(-1, 1), order).reshape(-1)
    return Cell(
        "LSTM", x_arg, time_arg, h_arg, h_new,
        w=_blocks(w.T.astype(np.float32), order)[None],
        r=_blocks(r.T.astype(np.float32), order)[None],
        b=np.concatenate([b, np.zeros_like(b)])[None].astype(np.float32),
        acts=[],
    )  # fmt: skip


def _match_gru(bd: _Body, h_new: Value) -> Cell | None:
    for zh, rest in _orders(bd.pair(h_new, "Add")):
        for z_ref, h_ref in _orders(bd.pair(zh, "Mul")):
            z, h_arg = bd.act(z_ref), bd.arg(h_ref)
            if z is None or h_arg is None:
                continue
            for one_minus, n_ref in _orders(bd.pair(rest, "Mul")):
                sub, n = bd.pair(one_minus, "Sub"), bd.act(n_ref)
                if sub is None or n is None or bd.src(sub[1]) is not bd.src(z_ref):
                    continue
                one = bd.const(sub[0])
                if one is None or one.size != 1 or float(one.reshape(-1)[0]) != 1.0:
                    continue
                cell = _gru_gates(bd, z, n, h_arg, h_new)
                if cell is not None:
                    return cell
    return None


def _gru_gates(
    bd: _Body, z: tuple[str, Value], n: tuple[str, Value], h_arg: int, h_new: Value
) -> Cell | None:
    for xn, rhn in _orders(bd.pair(n[1], "Add")):
        for r_ref, hn in _orders(bd.pair(rhn, "Mul")):
            r = bd.act(r_ref)
            if r is None or r[0] != z[0]:
                continue
            zs, rs = bd.pair(z[1], "Add"), bd.pair(r[1], "Add")
            if zs is None or rs is None:
                continue
            cell = _gru_sides(bd, [zs, rs], (xn, hn), h_arg, h_new)
            if cell is not None:
                cell.acts = [z[0], n[0]]
                return cell
    return None


def _gru_sides(
    bd: _Body, sums: list[tuple[Value, Value]], nh: tuple[Value, Value], h_arg: int,
    h_new: Value,
) -> Cell | None:
    """Gate sums z, r and the n pair: x-side and h-side thirds of two projections."""
    x_parts: list[tuple[Value, int]] = []
    h_parts: list[tuple[Value, int]] = []
    projs: dict[int, _Proj | None] = {}

    def side(v: Value) -> tuple[str, Value, int] | None:
        p = bd.part(v, 3)
        if p is None:
            return None
        if id(p[0]) not in projs:
            projs[id(p[0])] = _projection(bd, p[0])
        proj = projs[id(p[0])]
        if proj is None or (proj.x is None) == (proj.h is None):
            return None
        return ("x" if proj.x is not None else "h", p[0], p[1])

    for k, (a, b) in enumerate([*sums, nh]):
        sa, sb = side(a), side(b)
        if sa is None or sb is None or {sa[0], sb[0]} != {"x", "h"}:
            return None
        if k == 2 and sa[0] != "x":
            return None  # the reset gate must scale the recurrent third (reset_after)
        xs, hs = (sa, sb) if sa[0] == "x" else (sb, sa)
        x_parts.append((xs[1], xs[2]))
        h_parts.append((hs[1], hs[2]))
    if len({id(p[0]) for p in x_parts}) != 1 or len({id(p[0]) for p in h_parts}) != 1:
        return None
    jx, jh = [p[1] for p in x_parts], [p[1] for p in h_parts]
    if sorted(jx) != [0, 1, 2] or sorted(jh) != [0, 1, 2]:
        return None
    px, ph = projs[id(x_parts[0][0])], projs[id(h_parts[0][0])]
    assert px is not None and ph is not None and px.x is not None and ph.h is not None
    (x_arg, time_arg), w = px.x
    if ph.h[0] != h_arg:
        return None
    r = ph.h[1]
    hidden = r.shape[0]
    if w.shape[1] != 3 * hidden or r.shape[1] != 3 * hidden:
        return None
    bx = _blocks(px.bias.reshape(-1, 1), jx).reshape(-1)  # type: ignore[union-attr]
    bh = _blocks(ph.bias.reshape(-1, 1), jh).reshape(-1)  # type: ignore[union-attr]
    return Cell(
        "GRU", x_arg, time_arg, h_arg, h_new,
        w=_blocks(w.T.astype(np.float32), jx)[None],
        r=_blocks(r.T.astype(np.float32), jh)[None],
        b=np.concatenate([bx, bh])[None].astype(np.float32),
        acts=[],
    )  # fmt: skip


# -- the loop ----------------------------------------------------------------------------
def plan_loop(
    body: Graph, args: Sequence[Value], results: Sequence[Value], cell: Cell,
    init: Sequence[Value],
) -> LoopPlan | None:
    """Roles of the loop variables around ``cell``, or None when one does something else."""
    bd = _Body(body, args)
    plan = LoopPlan(cell, [])
    for k, res in enumerate(results):
        v = bd.src(res)
        if k == cell.h_arg:
            role = "h" if v is cell.h_new else None
        elif k == cell.c_arg:
            role = "c" if v is cell.c_new else None
        elif bd.arg(v) == k:
            role = "same"
        elif (step := _counter_step(bd, v, k)) is not None:
            role = "counter"
            plan.steps[k] = step
        else:
            role = _writer(bd, v, k, cell, init[k])
        if role is None:
            return None
        plan.roles.append(role)
    if plan.roles[cell.x_arg] != "same" or plan.steps.get(cell.time_arg) != 1:
        return None
    if cell.kind == "LSTM" and cell.c_arg is None:
        return None
    return plan


def _counter_step(bd: _Body, v: Value, k: int) -> int | None:
    for a, b in _orders(bd.pair(v, "Add")):
        c = bd.const(b)
        if bd.arg(a) == k and c is not None and c.size == 1 and c.dtype.kind in "iu":
            return int(c.reshape(-1)[0])
    return None


def _writer(bd: _Body, v: Value, k: int, cell: Cell, init: Value) -> str | None:
    """``seq`` when ``v`` is list ``k`` with row ``time`` set to h', ``last`` when it is h'
    as the whole one-row list."""
    nd = bd.op(v)
    if nd is None:
        return None
    if _is_row(bd, v, cell.h_new):
        return "last" if init.shape is not None and init.shape[:1] == (1,) else None
    if nd.op != "Concat" or nd.attr("axis") != 0 or len(nd.inputs) != 3:
        return None
    before, row, after = nd.inputs
    if not _is_row(bd, row, cell.h_new):  # type: ignore[arg-type]
        return None
    for piece, bound in ((before, 2), (after, 1)):  # rows [0, time) and [time + 1, T)
        sl = bd.op(piece)  # type: ignore[arg-type]
        if sl is None or sl.op != "Slice" or bd.arg(sl.inputs[0]) != k:  # type: ignore[arg-type]
            return None
        if cell.time_arg not in bd.deps(sl.inputs[bound]):  # type: ignore[arg-type]
            return None
    return "seq"


def _is_row(bd: _Body, v: Value, h_new: Value) -> bool:
    """``v`` is ``h_new`` [B, H] reshaped to one list row [1, B, H]."""
    nd = bd.op(v)
    if nd is None or nd.op not in ("Reshape", "Unsqueeze") or bd.src(nd.inputs[0]) is not h_new:  # type: ignore[arg-type]
        return False
    a, b = h_new.shape, nd.outputs[0].shape
    return a is not None and b is not None and tuple(b) == (1, *a)


def trip_count(
    cond: Graph, args: Sequence[Value], out: Value, init: Sequence[Value], plan: LoopPlan
) -> int | None:
    """How many times the loop runs when its condition is a conjunction of
    ``counter < limit`` with constant initial counters and limits."""
    bd = _Body(cond, args)
    leaves: list[Value] = []
    todo = [out]
    while todo:
        v = todo.pop()
        p = bd.pair(v, "And")
        if p is not None:
            todo.extend(p)
        else:
            leaves.append(v)
    trips = []
    for leaf in leaves:
        p = bd.pair(leaf, "Less")
        q = bd.pair(leaf, "Greater")
        a, lim = p if p is not None else (q[1], q[0]) if q is not None else (None, None)
        if a is None or lim is None:
            return None
        k = bd.arg(a)
        limit = bd.const(lim)
        if limit is None and (j := bd.arg(lim)) is not None and plan.roles[j] == "same":
            limit = init[j].const
        start = init[k].const if k is not None else None
        step = plan.steps.get(k) if k is not None else None
        if limit is None or start is None or not step or step < 0 or limit.size != 1:
            return None
        span = float(limit.reshape(-1)[0]) - float(start.reshape(-1)[0])
        trips.append(max(0, math.ceil(span / step)))
    return min(trips) if trips else None


def is_zeros(v: Value) -> bool:
    """``v`` is all zeros (a constant, or ConstantOfShape / Expand of zero)."""
    if v.const is not None:
        return not np.any(v.const)
    node = v.producer
    if node is None:
        return False
    if node.op == "ConstantOfShape":
        value = node.attr("value")
        return value is None or not np.any(value)
    if node.op == "Expand" and node.inputs[0] is not None and node.inputs[0].const is not None:
        return not np.any(node.inputs[0].const)
    return False
