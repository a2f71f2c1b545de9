#!/usr/bin/env python3
"""Fails if rcmgr's modules import each other in a cycle.

Reads the dependency graph that `cargo modules dependencies` prints (Graphviz dot: one node
per module and item, "uses" edges between them), lifts every "uses" edge to the modules that
own its two ends, and looks for cycles at two levels:

- the layers (the crate's top-level modules: sync, limits, account, graph, gate, observe,
  handles, manager, ...) must form a DAG: a layer never reaches back up;
- inside the crate, no two modules may depend on each other through a cycle, except along the
  parent/child line (a `mod.rs` naming its children's items, a child using its parent's) which
  is how Rust modules are built and not a layering question.

Usage: cargo modules dependencies --lib -p rcmgr --no-externs | .ci/module-cycles.py
"""
import re
import sys

# Pairs of modules allowed to name each other, each with its reason. cargo-modules files a
# method under its type's module whatever file its `impl` is in, so a pair of types that
# convert into each other reads as a cycle of their modules.
MUTUAL = {
    # `PartialLimitConfig::build` gives a `ConcreteLimitConfig`, and go's API has the way
    # back, `ConcreteLimitConfig::to_partial` (written in partial.rs, next to `build`).
    frozenset({"rcmgr::limits::concrete", "rcmgr::limits::partial"}),
}

NODE = re.compile(r'^\s*"([^"]+)" \[label="[^"]*"[^\]]*\]; // "(\w+)" node')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')


def owner(path, modules):
    """The module that owns `path` (the path itself when it is a module)."""
    while path not in modules:
        if "::" not in path:
            return None
        path = path.rsplit("::", 1)[0]
    return path


def tangles(graph):
    """The strongly connected components of `graph` (node -> set of nodes) with more than one
    node: each is a set of modules that reach each other, a cycle or several. Tarjan's
    algorithm with an explicit stack, so no recursion whatever the graph's depth."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            pushed = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    pushed = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if pushed:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def edges_within(graph, component):
    """The edges of `graph` between members of `component`, for the report."""
    members = set(component)
    return [(a, b) for a in component for b in sorted(graph[a]) if b in members]


def main():
    text = sys.stdin.read()
    modules, uses = set(), []
    for line in text.splitlines():
        node = NODE.match(line)
        if node and node.group(2) in ("mod", "crate"):
            modules.add(node.group(1))
        edge = EDGE.match(line)
        if edge:
            uses.append((edge.group(1), edge.group(2)))
    if len(modules) < 2 or not uses:
        sys.exit("module-cycles: no module graph on stdin (did cargo modules fail?)")
    crate = min(modules, key=len)

    def layer(module):
        parts = module.split("::")
        return "::".join(parts[:2]) if len(parts) > 1 else None

    def related(a, b):
        return a == b or a.startswith(b + "::") or b.startswith(a + "::")

    layers, files = {}, {}
    for source, target in uses:
        a, b = owner(source, modules), owner(target, modules)
        if a is None or b is None:
            continue
        la, lb = layer(a), layer(b)
        if la and lb and la != lb:
            layers.setdefault(la, set()).add(lb)
            layers.setdefault(lb, set())
        if not related(a, b) and frozenset({a, b}) not in MUTUAL:
            files.setdefault(a, set()).add(b)
            files.setdefault(b, set())
    failed = False
    for what, graph in (("layers", layers), ("modules", files)):
        for component in tangles(graph):
            failed = True
            print(f"module-cycles: these {what} of {crate} depend on each other in a cycle:",
                  file=sys.stderr)
            for a, b in edges_within(graph, component):
                print(f"    {a} -> {b}", file=sys.stderr)
    if failed:
        sys.exit(1)
    print(f"module-cycles: {len(layers)} layers and {len(files)} modules of {crate}, no cycle")


def self_test():
    """The check itself, on two small graphs: one with a cycle through a method filed under
    its type, one without."""
    def dot(edges):
        nodes = {"k", "k::a", "k::b", "k::c"}
        lines = [f'    "{n}" [label="mod|{n}"]; // "{"crate" if n == "k" else "mod"}" node'
                 for n in sorted(nodes)]
        lines += [f'    "{a}" -> "{b}" [label="uses"]; // "uses" edge' for a, b in edges]
        return "\n".join(lines)

    def run(text):
        import io
        stdin, stderr = sys.stdin, sys.stderr
        sys.stdin, sys.stderr = io.StringIO(text), io.StringIO()
        try:
            main()
            return 0
        except SystemExit as exit:
            return exit.code
        finally:
            sys.stdin, sys.stderr = stdin, stderr

    assert run(dot([("k::a::T::f", "k::b::U"), ("k::b", "k::c::V"), ("k::c::V", "k::a::T")])) == 1
    assert run(dot([("k::a::T::f", "k::b::U"), ("k::b", "k::c::V")])) == 0
    print("module-cycles: self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        main()
