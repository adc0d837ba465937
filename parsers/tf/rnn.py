"""TF While loops: Keras LSTM/GRU loops become one IR LSTM/GRU node; others an IR Loop.

Keras (2 and 3, TF backend) runs a recurrent layer as ``While`` over loop variables
``[counter, max, time, output TensorList, h(, c), input TensorList, kernel,
recurrent_kernel(, bias)]``; the body reads ``x_t = TensorListGetItem(input, time)``,
computes one cell step and writes ``h`` into the output list (at ``time`` with
``return_sequences``, else at 0). The matcher recognises the body by its math:

- LSTM: ``z = x_t@W + h@R + b``; ``i, f, g, o = split(z, 4)``;
  ``c' = ra(f)*c + ra(i)*a(g)``; ``h' = ra(o)*a(c')``
- GRU, ``reset_after=True``: ``mx = x_t@W + b[0]``, ``mh = h@R + b[1]``, each cut in
  z, r, hh thirds; ``z = ra(xz+hz)``, ``r = ra(xr+hr)``, ``n = a(xh + r*hh)``;
  ``h' = z*h + (1-z)*n``

with ``ra``/``a`` Sigmoid, Tanh or Relu, and lowers it to ONNX's LSTM (gates i, o, f, c;
``B = [b, 0]``) or GRU (gates z, r, h; ``linear_before_reset=1``, ``B = [b[0], b[1]]``):
``W = kernel^T``, ``R = recurrent_kernel^T`` reordered per gate. The While's results
map back: the output list is ``Y`` (or the last ``h``), ``h``/``c`` are ``Y_h``/``Y_c``,
counters end at ``start + T``, the rest pass through.

Any other While without TensorLists becomes an IR ``Loop`` whose body runs the TF body
then the TF condition (the first condition evaluated before the loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir import DataType, Graph, Value
from parsers.tf.context import OpContext, Refused, TensorList
from parsers.tf.lower import Builder, FunctionBody

__all__ = ["lower_while"]

_PASS = {"Identity", "StopGradient", "Snapshot", "ReadVariableOp"}
_ACTS = {"Sigmoid": "Sigmoid", "Tanh": "Tanh", "Relu": "Relu"}
_ADD = {"Add", "AddV2"}


class _Body:
    """Read-only queries over a normalised function body."""

    def __init__(self, body: FunctionBody) -> None:
        self.f = body
        self.arg_index = {a: i for i, a in enumerate(body.args)}

    def src(self, ref: str) -> str:
        while True:
            nd = self.node(ref)
            if nd is None or nd.op not in _PASS:
                return ref
            ref = _data(nd)[0]

    def node(self, ref: str) -> Any:
        return self.f.by_name.get(ref.split(":")[0]) if ":" in ref else None

    def op(self, ref: str) -> str | None:
        nd = self.node(ref)
        return None if nd is None else nd.op

    def arg(self, ref: str) -> int | None:
        return self.arg_index.get(self.src(ref))

    def ins(self, ref: str) -> list[str]:
        nd = self.node(ref)
        return [] if nd is None else [self.src(r) for r in _data(nd)]

    def out_index(self, ref: str) -> int:
        return int(ref.split(":")[1])

    def const(self, ref: str) -> np.ndarray | None:
        nd = self.node(self.src(ref))
        if nd is None or nd.op != "Const":
            return None
        from parsers.tf.context import attr_value

        return np.asarray(attr_value(nd.attr["value"]))

    def pair(self, ref: str, ops: set[str]) -> tuple[str, str] | None:
        """Both inputs of a binary node of one of ``ops`` producing ``ref``."""
        ref = self.src(ref)
        if self.op(ref) not in ops:
            return None
        a, b = self.ins(ref)[:2]
        return a, b

    def terms(self, ref: str) -> list[str]:
        """Summands of an Add/AddV2/BiasAdd tree."""
        ref = self.src(ref)
        if self.op(ref) in _ADD | {"BiasAdd"}:
            return [t for r in self.ins(ref)[:2] for t in self.terms(r)]
        return [ref]

    def act(self, ref: str) -> tuple[str, str] | None:
        """(ONNX activation name, its input) when ``ref`` is an activation's output."""
        ref = self.src(ref)
        name = _ACTS.get(self.op(ref) or "")
        return None if name is None else (name, self.ins(ref)[0])

    def matmul(self, ref: str) -> tuple[str, int] | None:
        """(data ref, weight arg index) of ``data @ arg`` without transposes."""
        ref = self.src(ref)
        nd = self.node(ref)
        if nd is None or nd.op != "MatMul":
            return None
        if nd.attr["transpose_a"].b or nd.attr["transpose_b"].b:
            return None
        a, b = self.ins(ref)
        w = self.arg_index.get(b)
        return None if w is None else (a, w)

    def is_one(self, ref: str) -> bool:
        c = self.const(ref)
        return c is not None and c.size == 1 and float(c.reshape(-1)[0]) == 1.0


def _data(nd: Any) -> list[str]:
    return [r for r in nd.input if not r.startswith("^")]


@dataclass
class _Cell:
    kind: str  # "LSTM" or "GRU"
    x_list: int  # arg indices
    time: int
    out_list: int
    out_at_time: bool  # output written at `time` (return_sequences) or at 0
    h: int
    w: int
    r: int
    c: int | None = None
    bias: int | None = None
    acts: list[str] = field(default_factory=list)  # ONNX activations f, g(, h)
    counters: dict[int, int] = field(default_factory=dict)  # arg -> step added per iteration
    passthrough: set[int] = field(default_factory=set)


# -- matching ----------------------------------------------------------------------------
def _cell_input(bd: _Body, ref: str) -> tuple[int, int] | None:
    """(input list arg, time arg) when ``ref`` is ``TensorListGetItem(list_arg, time_arg)``."""
    ref = bd.src(ref)
    if bd.op(ref) != "TensorListGetItem":
        return None
    lst, idx = bd.ins(ref)[:2]
    a, t = bd.arg_index.get(lst), bd.arg_index.get(idx)
    return None if a is None or t is None else (a, t)


def _match_lstm(bd: _Body, item: str) -> _Cell | None:
    h_new = bd.pair(item, {"Mul"})
    if h_new is None:
        return None
    for o_ref, t_ref in (h_new, h_new[::-1]):
        o, t = bd.act(o_ref), bd.act(t_ref)
        if o is None or t is None:
            continue
        c_sum = bd.pair(t[1], _ADD)
        if c_sum is None:
            continue
        cell = _match_lstm_state(bd, c_sum, o, t[0], t[1])
        if cell is not None:
            return cell
    return None


def _match_lstm_state(
    bd: _Body, c_sum: tuple[str, str], o: tuple[str, str], act: str, c_new: str
) -> _Cell | None:
    for fc, ig in (c_sum, c_sum[::-1]):
        fc_pair, ig_pair = bd.pair(fc, {"Mul"}), bd.pair(ig, {"Mul"})
        if fc_pair is None or ig_pair is None:
            continue
        for f_ref, c_ref in (fc_pair, fc_pair[::-1]):
            c_arg = bd.arg_index.get(c_ref)
            f = bd.act(f_ref)
            if c_arg is None or f is None:
                continue
            for i_ref, g_ref in (ig_pair, ig_pair[::-1]):
                i, g = bd.act(i_ref), bd.act(g_ref)
                if i is None or g is None or g[0] != act or not i[0] == f[0] == o[0]:
                    continue
                gates = [i[1], f[1], g[1], o[1]]
                cell = _match_lstm_gates(bd, gates)
                if cell is not None:
                    cell.c, cell.acts = c_arg, [i[0], act, act]
                    return cell
    return None


def _match_lstm_gates(bd: _Body, gates: list[str]) -> _Cell | None:
    split = {bd.src(g).split(":")[0] for g in gates}
    if len(split) != 1 or bd.op(gates[0]) != "Split":
        return None
    if [bd.out_index(bd.src(g)) for g in gates] != [0, 1, 2, 3]:
        return None
    z = bd.ins(bd.src(gates[0]))[1]
    return _match_projections(bd, bd.terms(z), "LSTM")


def _match_projections(bd: _Body, terms: list[str], kind: str) -> _Cell | None:
    """``x_t@W + h@R (+ b)`` -> the cell's arg roles."""
    xw = hr = None
    bias: int | None = None
    for t in terms:
        mm = bd.matmul(t)
        if mm is not None and _cell_input(bd, mm[0]) is not None:
            xw = (_cell_input(bd, mm[0]), mm[1])
        elif mm is not None and mm[0] in bd.arg_index:
            hr = (bd.arg_index[mm[0]], mm[1])
        elif t in bd.arg_index and bias is None:
            bias = bd.arg_index[t]
        else:
            return None
    if xw is None or hr is None:
        return None
    (x_list, time), w = xw
    return _Cell(kind, x_list, time, -1, False, hr[0], w, hr[1], bias=bias)


def _bias_row(bd: _Body, ref: str) -> tuple[int, int] | None:
    """(bias arg, row) when ``ref`` is row k of a [2, N] bias argument."""
    ref = bd.src(ref)
    nd = bd.node(ref)
    if nd is None:
        return None
    if nd.op == "Squeeze":
        ref = bd.ins(ref)[0]
        nd = bd.node(ref)
        if nd is not None and nd.op == "Split" and nd.attr["num_split"].i == 2:
            arg = bd.arg_index.get(bd.ins(ref)[1])
            return None if arg is None else (arg, bd.out_index(ref))
        return None
    if nd.op == "Unpack" and nd.attr["num"].i == 2 and nd.attr["axis"].i == 0:
        arg = bd.arg_index.get(bd.ins(ref)[0])
        return None if arg is None else (arg, bd.out_index(ref))
    return None


def _third(bd: _Body, ref: str, hidden: int | None) -> tuple[str, int] | None:
    """(sliced tensor, j) when ``ref`` is the j-th third of a tensor's last axis."""
    ref = bd.src(ref)
    nd = bd.node(ref)
    if nd is None:
        return None
    if nd.op == "Split" and nd.attr["num_split"].i == 3:
        return bd.ins(ref)[1], bd.out_index(ref)
    if nd.op == "SplitV" and nd.attr["num_split"].i == 3:
        return bd.ins(ref)[0], bd.out_index(ref)
    if nd.op == "StridedSlice" and hidden is not None:
        return _third_slice(bd, nd, ref, hidden)
    return None


def _third_slice(bd: _Body, nd: Any, ref: str, hidden: int) -> tuple[str, int] | None:
    data, b_ref, e_ref, s_ref = bd.ins(ref)
    begin, end, strides = bd.const(b_ref), bd.const(e_ref), bd.const(s_ref)
    if begin is None or end is None or strides is None or begin.size != 2:
        return None
    if nd.attr["shrink_axis_mask"].i or nd.attr["new_axis_mask"].i or np.any(strides != 1):
        return None
    if (
        nd.attr["ellipsis_mask"].i
        or not nd.attr["begin_mask"].i & 1
        or not nd.attr["end_mask"].i & 1
    ):
        return None
    b = 0 if nd.attr["begin_mask"].i & 2 else int(begin[1])
    e = None if nd.attr["end_mask"].i & 2 else int(end[1])
    if b % hidden != 0:
        return None
    j = b // hidden
    if e is not None and e != b + hidden:
        return None
    if e is None and j != 2:
        return None
    return data, j


def _match_gru(bd: _Body, item: str) -> _Cell | None:
    s = bd.pair(item, _ADD)
    if s is None:
        return None
    for zh, rest in (s, s[::-1]):
        zh_pair, rest_pair = bd.pair(zh, {"Mul"}), bd.pair(rest, {"Mul"})
        if zh_pair is None or rest_pair is None:
            continue
        for z_ref, h_ref in (zh_pair, zh_pair[::-1]):
            h_arg = bd.arg_index.get(h_ref)
            z = bd.act(z_ref)
            if h_arg is None or z is None:
                continue
            for one_minus, n_ref in (rest_pair, rest_pair[::-1]):
                sub = bd.pair(one_minus, {"Sub"})
                n = bd.act(n_ref)
                if sub is None or n is None or not bd.is_one(sub[0]):
                    continue
                if bd.src(sub[1]) != bd.src(z_ref):
                    continue
                cell = _match_gru_gates(bd, z, n, h_arg)
                if cell is not None:
                    return cell
    return None


def _match_gru_gates(bd: _Body, z: tuple[str, str], n: tuple[str, str], h_arg: int) -> _Cell | None:
    zs, ns = bd.pair(z[1], _ADD), bd.pair(n[1], _ADD)
    if zs is None or ns is None:
        return None
    for xh, rhh in (ns, ns[::-1]):
        rmul = bd.pair(rhh, {"Mul"})
        if rmul is None:
            continue
        for r_ref, hh in (rmul, rmul[::-1]):
            r = bd.act(r_ref)
            if r is None or r[0] != z[0]:
                continue
            rs = bd.pair(r[1], _ADD)
            if rs is None:
                continue
            cell = _match_gru_thirds(bd, [zs, rs, (xh, hh)], h_arg)
            if cell is not None:
                cell.acts = [z[0], n[0]]
                return cell
    return None


def _match_gru_thirds(bd: _Body, sums: list[tuple[str, str]], h_arg: int) -> _Cell | None:
    """Each gate sum = x-third j + h-third j, thirds of ``x@W + b0`` and ``h@R + b1``."""
    bases: list[set[str]] = [set(), set()]  # x side, h side
    for j, (a, b) in enumerate(sums):
        ok = False
        for xa, hb in ((a, b), (b, a)):
            tx, th = _third(bd, xa, None), _third(bd, hb, None)
            tx = tx or _third_any(bd, xa)
            th = th or _third_any(bd, hb)
            if tx is None or th is None or tx[1] != j or th[1] != j:
                continue
            bases[0].add(bd.src(tx[0]))
            bases[1].add(bd.src(th[0]))
            ok = True
            break
        if not ok:
            return None
    if len(bases[0]) != 1 or len(bases[1]) != 1:
        return None
    x_terms, h_terms = bd.terms(bases[0].pop()), bd.terms(bases[1].pop())
    cell = _match_gru_side(bd, x_terms, h_terms, h_arg)
    return cell


def _third_any(bd: _Body, ref: str) -> tuple[str, int] | None:
    """Like :func:`_third` for StridedSlice cuts, guessing the width from the begin index."""
    ref = bd.src(ref)
    nd = bd.node(ref)
    if nd is None or nd.op != "StridedSlice":
        return None
    begin, end = bd.const(bd.ins(ref)[1]), bd.const(bd.ins(ref)[2])
    if begin is None or end is None or begin.size != 2:
        return None
    if nd.attr["begin_mask"].i & 2:  # the first third starts at 0: width from its end
        width = int(end[1])
    elif not nd.attr["end_mask"].i & 2:
        width = int(end[1]) - int(begin[1])
    else:
        width = int(begin[1]) // 2
    return _third_slice(bd, nd, ref, width) if width > 0 else None


def _match_gru_side(bd: _Body, x_terms: list[str], h_terms: list[str], h_arg: int) -> _Cell | None:
    if len(x_terms) != 2 or len(h_terms) != 2:
        return None
    cell = None
    rows: dict[int, int] = {}
    bias_arg = None
    for terms, side in ((x_terms, 0), (h_terms, 1)):
        mm = [bd.matmul(t) for t in terms]
        k = 0 if mm[0] is not None else 1
        if mm[k] is None:
            return None
        data, weight = mm[k]
        row = _bias_row(bd, terms[1 - k])
        if row is None or (bias_arg is not None and row[0] != bias_arg):
            return None
        bias_arg = row[0]
        rows[side] = row[1]
        if side == 0:
            ci = _cell_input(bd, data)
            if ci is None:
                return None
            cell = _Cell("GRU", ci[0], ci[1], -1, False, h_arg, weight, -1, bias=bias_arg)
        else:
            if bd.arg_index.get(data) != h_arg or cell is None:
                return None
            cell.r = weight
    if rows != {0: 0, 1: 1}:
        return None
    return cell


def match_keras_rnn(body: FunctionBody) -> _Cell | None:
    """The cell a Keras recurrent While body computes, or None."""
    bd = _Body(body)
    sets = [n for n in body.nodes if n.op == "TensorListSetItem"]
    if len(sets) != 1:
        return None
    set_ref = f"{sets[0].name}:0"
    lst, index, item = (bd.src(r) for r in _data(sets[0])[:3])
    cell = _match_lstm(bd, item) or _match_gru(bd, item)
    if cell is None or lst not in bd.arg_index:
        return None
    cell.out_list = bd.arg_index[lst]
    if bd.arg_index.get(index) == cell.time:
        cell.out_at_time = True
    elif not _is_zero(bd.const(index)):
        return None
    return cell if _check_rets(bd, cell, item, set_ref) else None


def _is_zero(c: np.ndarray | None) -> bool:
    return c is not None and c.size == 1 and int(c.reshape(-1)[0]) == 0


def _check_rets(bd: _Body, cell: _Cell, item: str, set_ref: str) -> bool:
    """Every loop variable is the new state, the output list, a counter or unchanged."""
    rets = [bd.src(r) for r in bd.f.rets]
    if len(rets) != len(bd.f.args):
        return False
    state = {cell.h: bd.src(item), cell.out_list: set_ref}
    for k, ret in enumerate(rets):
        if k in state:
            if ret != state[k]:
                return False
        elif k == cell.c:
            continue  # checked by the gate math (c' feeds h'); its ret is read below
        elif ret == bd.f.args[k]:
            cell.passthrough.add(k)
        elif (step := _counter_step(bd, ret, k)) is not None:
            cell.counters[k] = step
        else:
            return False
    if cell.time not in cell.counters:
        return False
    return cell.c is None or bd.op(rets[cell.c]) in _ADD


def _counter_step(bd: _Body, ret: str, k: int) -> int | None:
    pair = bd.pair(ret, _ADD)
    if pair is None:
        return None
    for a, b in (pair, pair[::-1]):
        c = bd.const(b)
        if bd.arg_index.get(a) == k and c is not None and c.size == 1:
            return int(c.reshape(-1)[0])
    return None


# -- emitting -------------------------------------------------------------------------------
def lower_while(ctx: OpContext) -> list[Any]:
    b: Builder = ctx.b
    body = b.function(ctx.attr("body"))
    cell = match_keras_rnn(body)
    if cell is not None:
        return _emit_cell(ctx, cell, b.function(ctx.attr("cond")))
    if any(isinstance(v, TensorList) for v in ctx.inputs):
        ctx.fail(
            "While loop carries TensorLists but is not a recognised Keras recurrent loop "
            "(supported: LSTM, GRU with reset_after=True; no masking; sigmoid/tanh/relu)"
        )
    return _emit_loop(ctx, body, b.function(ctx.attr("cond")))


def _const_input(ctx: OpContext, k: int, what: str) -> np.ndarray:
    v = ctx.inputs[k]
    if not isinstance(v, Value) or v.const is None:
        ctx.fail(f"the recurrent {what} must be a constant (freeze the model)")
    return np.asarray(v.const)


def _emit_cell(ctx: OpContext, cell: _Cell, cond: FunctionBody) -> list[Any]:
    lst = ctx.inputs[cell.x_list]
    if not isinstance(lst, TensorList) or lst.tensor is None:
        ctx.fail("the recurrent input is not a stacked tensor")
    x = lst.tensor
    _check_trip_count(ctx, cond, cell, x)
    w = _const_input(ctx, cell.w, "kernel")
    r = _const_input(ctx, cell.r, "recurrent kernel")
    hidden = r.shape[0]
    bias = _const_input(ctx, cell.bias, "bias") if cell.bias is not None else None
    if cell.kind == "LSTM":
        weights = _lstm_weights(w, r, bias, hidden)
    else:
        weights = _gru_weights(w, r, bias, hidden)
    h0 = _initial(ctx, ctx.inputs[cell.h])
    inputs: list[Value | None] = [x, *(ctx.const(a) for a in weights), None, h0]
    attrs: dict[str, Any] = {"hidden_size": int(hidden)}
    defaults = ["Sigmoid", "Tanh", "Tanh"] if cell.kind == "LSTM" else ["Sigmoid", "Tanh"]
    if cell.acts != defaults:
        attrs["activations"] = cell.acts
    if cell.kind == "LSTM":
        inputs.append(_initial(ctx, ctx.inputs[cell.c]) if cell.c is not None else None)
        y, y_h, y_c = ctx.op_("LSTM", inputs, n_out=3, **attrs)
    else:
        y, y_h = ctx.op_("GRU", inputs, n_out=2, linear_before_reset=1, **attrs)
        y_c = None
    while inputs and inputs[-1] is None:
        inputs.pop()
    steps = ctx.op_("Gather", [ctx.op_("Shape", [x]), ctx.i64(0)], axis=0)
    results: list[Any] = []
    for k, init in enumerate(ctx.inputs):
        if k == cell.out_list:
            seq = ctx.op_("Squeeze", [y, ctx.i64([1])]) if cell.out_at_time else y_h
            results.append(TensorList(seq, x.dtype))
        elif k == cell.h:
            results.append(ctx.op_("Squeeze", [y_h, ctx.i64([0])]))
        elif k == cell.c and y_c is not None:
            results.append(ctx.op_("Squeeze", [y_c, ctx.i64([0])]))
        elif k in cell.counters:
            results.append(_counter_end(ctx, init, steps, cell.counters[k]))
        else:
            results.append(init)
    return results


def _check_trip_count(ctx: OpContext, cond: FunctionBody, cell: _Cell, x: Value) -> None:
    """The loop runs over the whole sequence: ``time < T`` with T the input's length."""
    bd = _Body(cond)
    for nd in cond.nodes:
        if nd.op != "Less":
            continue
        a, b = (bd.src(r) for r in _data(nd)[:2])
        if bd.arg_index.get(a) != cell.time:
            continue
        limit = bd.const(b)
        steps = x.shape[0] if x.shape else None
        if limit is not None and isinstance(steps, int) and int(limit.reshape(-1)[0]) != steps:
            ctx.fail(f"the recurrent loop stops after {limit} of {steps} steps")
        return
    ctx.fail("the recurrent loop condition does not compare the time step")


def _counter_end(ctx: OpContext, init: Any, steps: Value, step: int) -> Value:
    if not isinstance(init, Value):
        raise Refused(f"node {ctx.name!r}: a loop counter is not a tensor")
    dt = init.dtype.numpy if init.dtype != DataType.UNDEFINED else np.int32
    n = ctx.op_("Cast", [steps], to=int(DataType.from_numpy(dt)))
    if step != 1:
        n = ctx.op_("Mul", [n, ctx.const(np.asarray(step, dt))])
    return ctx.op_("Add", [init, n])


def _initial(ctx: OpContext, v: Any) -> Value | None:
    """``[1, batch, hidden]`` initial state, or None when it is all zeros."""
    if not isinstance(v, Value):
        ctx.fail("the recurrent state is not a tensor")
    if _is_zeros(v):
        return None
    return ctx.op_("Unsqueeze", [v, ctx.i64([0])])


def _is_zeros(v: Value) -> bool:
    if v.const is not None:
        return not np.any(v.const)
    node = v.producer
    if node is not None and node.op in ("Expand", "ConstantOfShape"):
        src = node.inputs[0] if node.op == "Expand" else None
        if src is not None and src.const is not None:
            return not np.any(src.const)
        if node.op == "ConstantOfShape":
            return not np.any(node.attr("value"))
    return False


def _blocks(m: np.ndarray, n: int, order: Sequence[int]) -> np.ndarray:
    """Rows of ``m`` (``n`` gate blocks) in ``order``."""
    parts = np.split(m, n, axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


def _lstm_weights(
    w: np.ndarray, r: np.ndarray, bias: np.ndarray | None, hidden: int
) -> tuple[np.ndarray, ...]:
    order = (0, 3, 1, 2)  # Keras i, f, c, o -> ONNX i, o, f, c
    w_onnx = _blocks(w.T, 4, order)[None]
    r_onnx = _blocks(r.T, 4, order)[None]
    b = np.zeros(4 * hidden, w.dtype) if bias is None else _blocks(bias.reshape(-1), 4, order)
    b_onnx = np.concatenate([b, np.zeros_like(b)])[None]
    return np.ascontiguousarray(w_onnx), np.ascontiguousarray(r_onnx), b_onnx.astype(w.dtype)


def _gru_weights(
    w: np.ndarray, r: np.ndarray, bias: np.ndarray | None, hidden: int
) -> tuple[np.ndarray, ...]:
    w_onnx = np.ascontiguousarray(w.T)[None]  # Keras z, r, h = ONNX z, r, h
    r_onnx = np.ascontiguousarray(r.T)[None]
    b = np.zeros((2, 3 * hidden), w.dtype) if bias is None else bias.reshape(2, 3 * hidden)
    return w_onnx, r_onnx, b.reshape(1, -1).astype(w.dtype)


# -- generic While -> Loop ------------------------------------------------------------------
def _emit_loop(ctx: OpContext, body: FunctionBody, cond: FunctionBody) -> list[Any]:
    b: Builder = ctx.b
    init = [ctx.x(i) for i in range(len(ctx.inputs))]
    first = b.call_function(cond.name, init)[0]
    shapes = ctx.attr("output_shapes", None) or [None] * len(init)
    g = Graph(name=f"{ctx.name}/body")
    inner = Builder(b.s, g, b)
    it = Value(b.s.unique(f"{ctx.name}/iter"), DataType.INT64, ())
    cin = Value(b.s.unique(f"{ctx.name}/cond_in"), DataType.BOOL, ())
    loop_vars = []
    for k, v in enumerate(init):
        shape = shapes[k] if k < len(shapes) else None
        vshape = None if shape is None else tuple(shape)
        loop_vars.append(Value(b.s.unique(f"{ctx.name}/var{k}"), v.dtype, vshape))
    g.inputs = [it, cin, *loop_vars]
    new = inner.call_function(body.name, loop_vars)
    if any(not isinstance(v, Value) for v in new):
        ctx.fail("the While body produces TensorLists")
    again = inner.call_function(cond.name, new)[0]
    g.outputs = [_own(inner, again), *(_own(inner, v) for v in new)]
    return (
        ctx.op_("Loop", [None, first, *init], n_out=len(init), body=g)
        if len(init) > 1
        else [ctx.op_("Loop", [None, first, *init], body=g)]
    )


def _own(b: Builder, v: Value) -> Value:
    """``v`` as a value produced inside ``b``'s graph (an Identity when it is not)."""
    if v.producer is not None and v.producer.graph is b.graph:
        return v
    return b.emit("Identity", [v], hint="loop_out")[0]
