"""Graphviz DOT text of the graph behind a tensor, for studying how backward walks it.

    print(tg.viz.to_dot(loss, params=dict(model.named_parameters())))

Paste the text into any Graphviz viewer (`dot -Tpng`); producing it needs no Graphviz.
Boxes are op nodes (the `Function` and its output shapes); ellipses are leaf tensors.
"""
from __future__ import annotations

from .errors import fmt_shape
from .tensor import Tensor


def _esc(s):
    return str(s).replace("\\", "\\\\").replace('"', '\\"')


def to_dot(root: Tensor, params: dict | None = None, rankdir: str = "BT") -> str:
    names = {id(t): n for n, t in (params or {}).items()}
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
        lines.append(f'  {nid} [shape=box style=filled fillcolor=lightyellow '
                     f'label="{_esc(ctx.fn.__name__)}{(chr(92) + "n" + shape_txt) if shape_txt else ""}{freed}"];')
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
