"""Suite-wide check: Netron's own reader opens every .ms that converter.convert writes.

Every path written through ``converter.ms.write_ms`` during the session is
recorded; at the end of the session (per xdist worker) the files still on disk
are decoded with Netron's generated reader under Node.js and compared with
liteconv's reader: node count and names, op type names (the MindSpore Lite
primitive of the op, or Custom), tensor dims and the subgraph split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

_WRITTEN: list[Path] = []


@pytest.fixture(autouse=True, scope="session")
def _netron_opens_every_written_model():
    import converter.ms as ms

    real = ms.write_ms

    def recording(graph, path, *args, **kwargs):
        result = real(graph, path, *args, **kwargs)
        _WRITTEN.append(Path(path))
        return result

    ms.write_ms = recording
    yield
    ms.write_ms = real
    files = [p for p in dict.fromkeys(_WRITTEN) if p.exists()]
    if not files or shutil.which("node") is None:
        return
    check_with_netron(files)


def check_with_netron(files: list[Path]) -> None:
    from test_ms_netron import netron_decode_many

    from converter.ms import read_ms
    from converter.ms.primitives import KHWC_PERM, PRIMITIVES, khwc_weights

    decoded = []
    for start in range(0, len(files), 50):  # bounded command lines
        decoded.extend(netron_decode_many(files[start : start + 50]))
    for path, info in zip(files, decoded, strict=True):
        graph = read_ms(path)
        nodes = list(graph.all_nodes())
        assert info["nodeCount"] == len(nodes), path
        assert sorted(n["name"] for n in info["nodes"]) == sorted(n.name for n in nodes), path
        by_name = {n.name: n for n in nodes}
        for n in info["nodes"]:
            node = by_name[n["name"]]
            mapped = PRIMITIVES.get(node.op)
            allowed = {"Custom"} | ({mapped.primitive} if mapped else set())
            assert n["type"] in allowed, (path, node.op, n["type"])
        dims = {t["name"]: t["dims"] for t in info["tensors"]}
        khwc = khwc_weights(nodes)  # stored KHWC: dims permuted
        for g in graph.all_graphs():
            for v in g.values():
                if v.shape is not None and v.name in dims:
                    want = [d if isinstance(d, int) else -1 for d in v.shape]
                    want = [want[a] for a in KHWC_PERM] if id(v) in khwc else want
                    assert dims[v.name] == want, (path, v.name, dims[v.name], want)
        assert len(info["subgraphs"]) == sum(1 for _ in graph.all_graphs()), path
