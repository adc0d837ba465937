"""Control flow and resource variables: WHILE, IF, CALL_ONCE, VAR_HANDLE, READ/ASSIGN_VARIABLE.

TFLite control-flow operators name other subgraphs (by index) that take their operands
as inputs. They are lowered by inlining those subgraphs as IR graphs:

- WHILE(cond, body) over loop variables ``v``: when the body is a Keras LSTM/GRU/SimpleRNN
  step (see :mod:`parsers.tflite.recurrent`) the whole loop becomes one IR LSTM/GRU/RNN
  node.
  Otherwise it is an IR ``Loop(M=None, cond0, v...)`` whose body graph (inputs
  ``iter, cond, v...``) runs the TFLite body and then the TFLite cond on the new values
  (outputs ``cond', v'...``); ``cond0`` is the cond evaluated once before the loop.
- IF(c, x...): an IR ``If`` whose branches are the inlined then/else subgraphs reading
  the outer operands directly.
- CALL_ONCE(init): the init subgraph inlined where it stands (it runs first, once).
- Resource variables (VAR_HANDLE -> READ_VARIABLE / ASSIGN_VARIABLE): resolved at parse
  time along the straight-line code (main graph and CALL_ONCE init): a read yields the
  value last assigned. The converted model is stateless: each run starts from the
  initial values (LiteRT keeps assignments across invocations). Assignments inside loop
  or branch bodies are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ir import DataType, Graph, Node, Value
from parsers.tflite import recurrent
from parsers.tflite.lower import LoweringError, OpContext

__all__ = ["LOWERINGS"]

_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def _own(ctx: OpContext, graph: Graph, v: Value) -> Value:
    """``v`` as a value produced inside ``graph`` (an Identity when it is not)."""
    if v.producer is not None and v.producer.graph is graph:
        return v
    out = Value(ctx.low.unique(f"{v.name}_out"), v.dtype, v.shape)
    graph.append(Node("Identity", [v], [out], {}, ctx.low.unique(f"{graph.name}/out",
                                                                  ctx.low.node_names)))
    return out


def _body_inputs(ctx: OpContext, index: int, init: list[Value]) -> list[Value]:
    """Fresh values for the inputs of subgraph ``index`` (dtype/shape as declared)."""
    sg = ctx.low.subgraph(index)
    if len(sg.inputs) != len(init):
        raise LoweringError(
            f"subgraph {sg.name!r} takes {len(sg.inputs)} inputs, {len(init)} are given"
        )
    return [
        Value(ctx.low.unique(sg.tensors[t].name), sg.tensors[t].dtype, ctx.low.tensor_shape(t, sg))
        for t in sg.inputs
    ]


def while_(ctx: OpContext) -> None:
    o = ctx.opts
    if o is None:
        raise LoweringError("WHILE has no options")
    cond_i, body_i = int(o.CondSubgraphIndex()), int(o.BodySubgraphIndex())
    init = [ctx.raw(i) for i in range(ctx.num_inputs)]
    if len(ctx.op.outputs) != len(init):
        raise LoweringError(f"WHILE has {len(init)} inputs but {len(ctx.op.outputs)} outputs")
    low = ctx.low
    mark = (len(low.problems), dict(low.unsupported))
    body = Graph(name=low.unique(f"{ctx.name}/body", low.node_names))
    args = _body_inputs(ctx, body_i, init)
    results = low.inline(body_i, body, args)
    if len(results) != len(init):
        raise LoweringError("the WHILE body returns another number of values than it takes")
    if _recurrent(ctx, cond_i, body, args, results, init):
        del low.problems[mark[0]:]  # the body's own findings no longer matter
        low.unsupported.clear()
        low.unsupported.update(mark[1])
        return
    first = low.inline(cond_i, low.graph, init, straight=low.straight)[0]
    again = low.inline(cond_i, body, results)[0]
    it = Value(low.unique(f"{ctx.name}/iter"), DataType.INT64, ())
    cond_in = Value(low.unique(f"{ctx.name}/cond_in"), DataType.BOOL, ())
    body.inputs = [it, cond_in, *args]
    body.outputs = [_own(ctx, body, _as_bool(ctx, body, again)),
                    *(_own(ctx, body, v) for v in results)]  # fmt: skip
    first = _as_bool(ctx, low.graph, first)
    outs = [ctx.raw_out(j) for j in range(len(init))]
    ctx.emit("Loop", [None, first, *init], {"body": body}, outputs=outs)


def _as_bool(ctx: OpContext, graph: Graph, v: Value) -> Value:
    if v.dtype == DataType.BOOL:
        return v
    out = Value(ctx.low.unique(f"{v.name}_bool"), DataType.BOOL, v.shape)
    graph.append(Node("Cast", [v], [out], {"to": int(DataType.BOOL)},
                      ctx.low.unique(f"{v.name}/Cast", ctx.low.node_names)))  # fmt: skip
    return out


def _recurrent(
    ctx: OpContext, cond_i: int, body: Graph, args: list[Value], results: list[Value],
    init: list[Value],
) -> bool:
    """Replace the loop by one LSTM/GRU node when the body is a Keras recurrent step."""
    cell = recurrent.match_cell(body, args, results)
    if cell is None:
        return False
    plan = recurrent.plan_loop(body, args, results, cell, init)
    if plan is None:
        return False
    x = init[cell.x_arg]
    if x.shape is None or len(x.shape) != 3 or not isinstance(x.shape[0], int):
        return False
    steps = int(x.shape[0])
    scratch = Graph(name="cond")
    try:
        cond_args = _body_inputs(ctx, cond_i, init)
        cond_out = ctx.low.inline(cond_i, scratch, cond_args)[0]
    except LoweringError:
        return False  # reported by the generic lowering
    start = init[cell.time_arg].const
    if start is None or int(np.ravel(start)[0]) != 0 or steps < 1:
        return False
    if recurrent.trip_count(scratch, cond_args, cond_out, init, plan) != steps:
        return False
    _emit_cell(ctx, plan, init, steps)
    return True


def _emit_cell(ctx: OpContext, plan: recurrent.LoopPlan, init: list[Value], steps: int) -> None:
    cell = plan.cell
    x = init[cell.x_arg]
    name = ctx.name
    h0 = _initial(ctx, init[cell.h_arg])
    ins: list[Value | None] = [x, ctx.constant(cell.w, f"{name}_W"),
                               ctx.constant(cell.r, f"{name}_R"),
                               ctx.constant(cell.b, f"{name}_B"), None, h0]  # fmt: skip
    attrs: dict[str, Any] = {"hidden_size": cell.hidden}
    if cell.acts != _DEFAULT_ACTS[cell.kind]:
        attrs["activations"] = cell.acts
    y_c = None
    if cell.kind == "LSTM":
        assert cell.c_arg is not None
        ins.append(_initial(ctx, init[cell.c_arg]))
        y, y_h, y_c = ctx.emit("LSTM", ins, attrs, outputs=3, hint=f"{name}/LSTM")
    elif cell.kind == "GRU":
        y, y_h = ctx.emit("GRU", ins, {**attrs, "linear_before_reset": 1}, outputs=2,
                          hint=f"{name}/GRU")  # fmt: skip
    else:
        attrs["activations"] = cell.acts
        y, y_h = ctx.emit("RNN", ins, attrs, outputs=2, hint=f"{name}/RNN")
    for j, role in enumerate(plan.roles):
        if role == "same":
            ctx.bind(j, init[j])
        elif role == "counter":
            _counter_end(ctx, j, init[j], plan.steps[j] * steps)
        elif role == "last":
            ctx.emit("Identity", [y_h], outputs=[ctx.raw_out(j)])
        else:
            src, axis = {"h": (y_h, 0), "c": (y_c, 0), "seq": (y, 1)}[role]
            ctx.emit("Squeeze", [src, ctx.ints([axis], "axes")], outputs=[ctx.raw_out(j)])


def _initial(ctx: OpContext, v: Value) -> Value | None:
    """``[1, batch, hidden]`` initial state, or None when it is all zeros."""
    if recurrent.is_zeros(v):
        return None
    return ctx.one("Unsqueeze", [v, ctx.ints([0], "state_axis")])


def _counter_end(ctx: OpContext, j: int, init: Value, total: int) -> None:
    if init.const is not None:
        end = np.asarray(init.const + np.asarray(total, init.const.dtype), init.const.dtype)
        ctx.bind(j, ctx.constant(end, f"{ctx.out_tensor(j).name}_end"))
        return
    inc = ctx.constant(np.asarray(total, init.dtype.numpy), f"{ctx.name}_trips")
    ctx.emit("Add", [init, inc], outputs=[ctx.raw_out(j)])


def if_(ctx: OpContext) -> None:
    o = ctx.opts
    if o is None:
        raise LoweringError("IF has no options")
    outer = [ctx.raw(i) for i in range(1, ctx.num_inputs)]
    branches = []
    for index, tag in ((int(o.ThenSubgraphIndex()), "then"), (int(o.ElseSubgraphIndex()),
                                                                "else")):  # fmt: skip
        g = Graph(name=ctx.low.unique(f"{ctx.name}/{tag}", ctx.low.node_names))
        results = ctx.low.inline(index, g, outer)
        if len(results) != len(ctx.op.outputs):
            raise LoweringError(f"the {tag} branch returns {len(results)} values, "
                                f"IF has {len(ctx.op.outputs)} outputs")  # fmt: skip
        g.outputs = [_own(ctx, g, v) for v in results]
        branches.append(g)
    cond = _as_bool(ctx, ctx.low.graph, ctx.raw(0))
    outs = [ctx.raw_out(j) for j in range(len(ctx.op.outputs))]
    ctx.emit("If", [cond], {"then_branch": branches[0], "else_branch": branches[1]},
             outputs=outs)  # fmt: skip


def call_once(ctx: OpContext) -> None:
    if not ctx.low.straight:
        raise LoweringError("CALL_ONCE inside a loop or branch body is not supported")
    index = int(ctx.opts.InitSubgraphIndex()) if ctx.opts is not None else -1
    done = ctx.low.shared.called
    if index in done:
        return
    done.add(index)
    ctx.low.inline(index, ctx.low.graph, [], straight=True)


def _resource_key(ctx: OpContext, i: int) -> str:
    key = ctx.raw(i).meta.get("resource")
    if key is None:
        raise LoweringError("the resource operand is not a VAR_HANDLE variable")
    return str(key)


def var_handle(ctx: OpContext) -> None:
    o = ctx.opts
    container = o.Container().decode() if o is not None and o.Container() else ""
    shared = o.SharedName().decode() if o is not None and o.SharedName() else ""
    key = f"{container}/{shared}" if shared else f"{ctx.name}"
    v = Value(ctx.low.unique(ctx.out_tensor().name), DataType.UNDEFINED, ())
    v.meta["resource"] = key
    ctx.bind(0, v)


def assign_variable(ctx: OpContext) -> None:
    if not ctx.low.straight:
        raise LoweringError("assigning a variable inside a loop or branch body is not "
                            "supported")  # fmt: skip
    ctx.low.shared.variables[_resource_key(ctx, 0)] = ctx.raw(1)


def read_variable(ctx: OpContext) -> None:
    key = _resource_key(ctx, 0)
    value = ctx.low.shared.variables.get(key)
    if value is None:
        raise LoweringError(f"variable {key!r} is read before it is assigned")
    ctx.emit("Identity", [value], outputs=[ctx.raw_out(0)])


LOWERINGS: dict[str, Callable[[OpContext], None]] = {
    "WHILE": while_,
    "IF": if_,
    "CALL_ONCE": call_once,
    "VAR_HANDLE": var_handle,
    "ASSIGN_VARIABLE": assign_variable,
    "READ_VARIABLE": read_variable,
}
