"""Control-flow kernels: If, Loop, Scan (ONNX semantics).

Bodies run through ``ctx.run_graph`` with the current environment as their
outer scope, so body nodes read enclosing values directly.
"""

from __future__ import annotations

import numpy as np

from converter.executor.registry import KernelContext, UnsupportedKernel


def _if(ctx: KernelContext, cond: np.ndarray) -> list[np.ndarray]:
    branch = ctx.attr("then_branch") if bool(np.asarray(cond).reshape(-1)[0]) else ctx.attr(
        "else_branch"
    )
    return ctx.run_graph(branch, [], ctx.scope)


def _loop(
    ctx: KernelContext, trip: np.ndarray | None, cond: np.ndarray | None, *carried: np.ndarray
) -> list[np.ndarray]:
    body = ctx.attr("body")
    scope = ctx.scope
    max_trip = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
    keep_going = True if cond is None else bool(np.asarray(cond).reshape(-1)[0])
    state = list(carried)
    n_scan = len(body.outputs) - 1 - len(state)
    scans: list[list[np.ndarray]] = [[] for _ in range(n_scan)]
    cond_dtype = np.bool_
    i = 0
    while keep_going and (max_trip is None or i < max_trip):
        args = [np.array(i, dtype=np.int64), np.array(keep_going, dtype=cond_dtype), *state]
        out = ctx.run_graph(body, args, scope)
        keep_going = bool(np.asarray(out[0]).reshape(-1)[0])
        state = list(out[1 : 1 + len(state)])
        for k, s in enumerate(out[1 + len(state) :]):
            scans[k].append(np.asarray(s))
        i += 1
    results = list(state)
    for k, items in enumerate(scans):
        if items:
            results.append(np.stack(items))
        else:
            results.append(_empty_scan(body.outputs[1 + len(state) + k]))
    return results


def _empty_scan(value) -> np.ndarray:
    shape = value.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        shape = ()
    try:
        dtype = value.dtype.numpy
    except TypeError:
        dtype = np.float32
    return np.zeros((0, *shape), dtype=dtype)


def _scan(ctx: KernelContext, *inputs: np.ndarray) -> list[np.ndarray]:
    body = ctx.attr("body")
    n_scan_in = int(ctx.attr("num_scan_inputs"))
    n_state = len(inputs) - n_scan_in
    state = list(inputs[:n_state])
    xs = list(inputs[n_state:])
    in_axes = list(ctx.attr("scan_input_axes") or [0] * n_scan_in)
    in_dirs = list(ctx.attr("scan_input_directions") or [0] * n_scan_in)
    n_scan_out = len(body.outputs) - n_state
    out_axes = list(ctx.attr("scan_output_axes") or [0] * n_scan_out)
    out_dirs = list(ctx.attr("scan_output_directions") or [0] * n_scan_out)
    xs = [np.moveaxis(x, a % x.ndim, 0) for x, a in zip(xs, in_axes, strict=True)]
    xs = [x[::-1] if d else x for x, d in zip(xs, in_dirs, strict=True)]
    lengths = {x.shape[0] for x in xs}
    if len(lengths) != 1:
        raise UnsupportedKernel(f"Scan: scan inputs have different lengths {sorted(lengths)}")
    steps = lengths.pop()
    collected: list[list[np.ndarray]] = [[] for _ in range(n_scan_out)]
    for t in range(steps):
        out = ctx.run_graph(body, [*state, *(x[t] for x in xs)], ctx.scope)
        state = list(out[:n_state])
        for k, y in enumerate(out[n_state:]):
            collected[k].append(np.asarray(y))
    results = list(state)
    for k, items in enumerate(collected):
        if items:
            y = np.stack(items)
        else:
            y = _empty_scan(body.outputs[n_state + k])
        if out_dirs[k]:
            y = y[::-1]
        axis = out_axes[k] % y.ndim
        results.append(np.require(np.moveaxis(y, 0, axis), requirements="C"))
    return results


KERNELS = {"If": _if, "Loop": _loop, "Scan": _scan}
