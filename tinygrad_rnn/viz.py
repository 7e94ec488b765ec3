"""Pictures of the graph behind a tensor, for studying how backward walks it.

    print(tg.viz.to_dot(loss, params=dict(model.named_parameters())))
    tg.viz.render(loss, "graph.svg")            # or .png; needs the viz extra and Graphviz

`to_dot` writes Graphviz DOT text and needs no Graphviz; paste it into any viewer
(`dot -Tpng`). Boxes are op nodes: "#k" is the place in which backward visits the node
(#1 first: the op that made the output), then the `Function` and its output shapes;
ellipses are leaf tensors. `render` draws the same text through the `graphviz` package.
"""
from __future__ import annotations

import os

from .autograd import _topological_order
from .errors import fmt_shape
from .tensor import Tensor


def _esc(s):
    return str(s).replace("\\", "\\\\").replace('"', '\\"')


def to_dot(root: Tensor, params: dict | None = None, rankdir: str = "BT", order: bool = True) -> str:
    """The graph behind root as DOT text; `params` names leaves ({name: tensor}); `order`
    numbers each op node by the step at which backward visits it."""
    names = {id(t): n for n, t in (params or {}).items()}
    visit = {}
    if order and root._ctx is not None and root._ctx.inputs is not None:
        visit = {id(c): k + 1 for k, c in enumerate(_topological_order([root._ctx]))}
    lines = ["digraph tinygrad_rnn {", f"  rankdir={rankdir};", '  node [fontname="monospace" fontsize=10];']
    seen, ids = set(), {}

    def node_id(obj):
        return ids.setdefault(id(obj), f"n{len(ids)}")

    def leaf(t):
        nid = node_id(t)
        if nid not in seen:
            seen.add(nid)
            label = names.get(id(t), "leaf" if t.requires_grad else "const")
            color = "lightblue" if t.requires_grad else "lightgrey"
            lines.append(f'  {nid} [shape=ellipse style=filled fillcolor={color} '
                         f'label="{_esc(label)}\\n{fmt_shape(t.shape)} {t.dtype.name}"];')
        return nid

    out = node_id(root)
    lines.append(f'  {out} [shape=doubleoctagon label="output\\n{fmt_shape(root.shape)}"];')
    if root._ctx is None:
        lines.append(f"  {leaf(root)} -> {out};")
        return "\n".join(lines + ["}"])
    lines.append(f'  {node_id(root._ctx)} -> {out} [label="{root._index}"];' if root._ctx.out_meta
                 else f"  {node_id(root._ctx)} -> {out};")
    # a single-output node records no output shape; take it from the tensors seen
    # flowing out of it (the root, or a consumer's input)
    out_shape = {id(root._ctx): root.shape}
    stack = [root._ctx]
    while stack:  # iterative: graphs of long sequences are deep
        ctx = stack.pop()
        nid = node_id(ctx)
        if nid in seen:
            continue
        seen.add(nid)
        shapes = ([m[0] for m in ctx.out_meta] if ctx.out_meta
                  else [out_shape[id(ctx)]] if id(ctx) in out_shape else None)
        shape_txt = (f"{len(shapes)} outputs" if shapes and len(shapes) > 3
                     else ", ".join(fmt_shape(s) for s in shapes) if shapes else "")
        freed = "\\n(freed)" if ctx.inputs is None else ""
        step = f"#{visit[id(ctx)]} " if id(ctx) in visit else ""
        lines.append(f'  {nid} [shape=box style=filled fillcolor=lightyellow '
                     f'label="{step}{_esc(ctx.fn.__name__)}{(chr(92) + "n" + shape_txt) if shape_txt else ""}{freed}"];')
        for k, inp in enumerate(ctx.inputs or ()):
            if not isinstance(inp, Tensor):
                continue
            if inp._ctx is None:
                src = leaf(inp)
            else:
                src = node_id(inp._ctx)
                out_shape.setdefault(id(inp._ctx), inp.shape)
                stack.append(inp._ctx)
            edge_label = f' [label="{inp._index}"]' if inp._ctx is not None and inp._ctx.out_meta else ""
            lines.append(f"  {src} -> {nid}{edge_label};")
    lines.append("}")
    return "\n".join(lines)


_INSTALL = ("install the viz extra (pip install -e '.[viz]', the graphviz package) and Graphviz's dot "
            "program (apt-get install graphviz, brew install graphviz, or https://graphviz.org/download)")


def render(root: Tensor, path, params: dict | None = None, rankdir: str = "BT") -> str:
    """Draw the graph behind root into `path`, an .svg or .png file (the format is the
    suffix), through the graphviz package and Graphviz's dot program. Returns the path."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in ("svg", "png"):
        raise ValueError(f"viz.render: path must end in .svg or .png, got {path!r}")
    try:
        import graphviz
    except ImportError:
        raise RuntimeError(f"viz.render needs the graphviz Python package, which is not installed: {_INSTALL}") from None
    src = graphviz.Source(to_dot(root, params=params, rankdir=rankdir))
    try:
        data = src.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(f"viz.render: Graphviz's dot program was not found on PATH: {_INSTALL}") from None
    with open(path, "wb") as f:
        f.write(data)
    return path
