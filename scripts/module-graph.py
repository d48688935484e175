#!/usr/bin/env python3
"""The module import graph of a crate: circles and layer violations.

    python3 scripts/module-graph.py broker/src coordinator/src   # exit 1 on a circle
    python3 scripts/module-graph.py --edges broker/src           # print the graph

Each file is a module (`group/mod.rs` is `group`, `group/records.rs` is
`group::records`). An edge A -> B is any path `crate::B...` (or `super::`,
`self::`) named in A outside comments, tests included. The rule checked is
the house's: a parent may use its children and a child may reach its
ancestors for shared types, but at every level the sibling modules form a
DAG: an edge from inside `group/` to `state` is an edge from `group` to
`state`, and any circle among siblings is reported.

Layers (`LAYERS` below, per crate, lowest first): a top-level module may
import only modules of its own layer or a lower one.
"""
import os
import re
import sys

# Per crate directory (as given on the command line, normalised): the
# top-level modules from the lowest layer to the highest. A module not named
# is unconstrained by layer (it still takes part in the circle check).
LAYERS = {
    "broker/src": [
        ["clock", "errors", "config", "topic_config", "principal", "authorizer", "metrics"],
        ["partition", "topics", "internal_topics"],
        ["data_dir", "peers", "tls", "sasl"],
        ["group", "txn", "replica_fetcher"],
        ["broker"],
        ["handlers"],
        ["connection"],
        ["server", "format", "exporter"],
    ],
    "coordinator/src": [
        ["security", "model", "election", "placement"],
        ["standalone", "etcd"],
    ],
}

COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'"(?:\\.|[^"\\])*"')
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\b(crate|super|self)::((?:[A-Za-z_][A-Za-z0-9_]*::)*)\{")


def modules(src):
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[0] == "bin":
                continue
            mods[tuple(rel)] = os.path.join(dirpath, f)
    return mods


def expand_groups(text):
    """`crate::a::{b, c::{d, e}}` -> `crate::a::b crate::a::c::d crate::a::c::e`."""
    while True:
        m = USE_GROUP.search(text)
        if not m:
            return text
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[m.end() : i - 1]
        parts, depth, start = [], 0, 0
        for j, ch in enumerate(inner):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                parts.append(inner[start:j])
                start = j + 1
        parts.append(inner[start:])
        prefix = m.group(1) + "::" + m.group(2)
        expanded = " ".join(prefix + p.strip() for p in parts if p.strip())
        text = text[: m.start()] + expanded + text[i:]


def edges(src):
    mods = modules(src)
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path) as f:
            text = STRING.sub('""', COMMENT.sub("", f.read()))
        text = expand_groups(text)
        for m in PATH.finditer(text):
            names = [n for n in m.group(2).split("::") if n]
            if m.group(1) == "crate":
                base = []
            elif m.group(1) == "self":
                base = list(mod)
            else:
                base = list(mod[:-1])
                while names and names[0] == "super":
                    base, names = base[:-1], names[1:]
            full = base + names
            # The longest prefix that is a module.
            for k in range(len(full), -1, -1):
                if tuple(full[:k]) in mods:
                    target = tuple(full[:k])
                    break
            if target != mod:
                graph[mod].add(target)
    return graph


def sibling_edges(graph):
    """Edges between siblings: A -> B becomes P/a -> P/b for their deepest
    common parent P; edges to an ancestor (a child reaching its parent) and
    from a parent into its own children are dropped."""
    out = {}
    for a, targets in graph.items():
        for b in targets:
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]:
                k += 1
            if k == len(a) or k == len(b):
                continue  # ancestor or descendant
            out.setdefault(a[: k + 1], set()).add(b[: k + 1])
    return out


def circles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    nodes = set(graph) | {b for bs in graph.values() for b in bs}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def name(m):
    return "::".join(m) or "crate"


def main(argv):
    show = "--edges" in argv
    dirs = [a for a in argv if not a.startswith("--")]
    failed = False
    for src in dirs:
        bad = 0
        key = os.path.normpath(src)
        graph = edges(src)
        sib = sibling_edges(graph)
        if show:
            for a in sorted(sib):
                print(f"{key}: {name(a)} -> {', '.join(sorted(name(b) for b in sib[a]))}")
        for comp in circles(sib):
            bad += 1
            print(f"{key}: circle: {' <-> '.join(name(m) for m in comp)}")
            for a in comp:
                for b in sorted(sib.get(a, ())):
                    if b in comp:
                        print(f"    {name(a)} -> {name(b)}")
        layers = LAYERS.get(key, [])
        level = {m: i for i, layer in enumerate(layers) for m in layer}
        for a, targets in sorted(sib.items()):
            if len(a) != 1 or a[0] not in level:
                continue
            for b in sorted(targets):
                if b[0] in level and level[b[0]] > level[a[0]]:
                    bad += 1
                    print(f"{key}: layer: {name(a)} (layer {level[a[0]]}) imports {name(b)} (layer {level[b[0]]})")
        if not bad:
            print(f"{key}: {len(graph)} modules, no circles, layers hold")
        failed = failed or bad > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
