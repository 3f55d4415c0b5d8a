#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks that the sources' #include graph has no cycles.

Reads the #include "..." lines of SRC/**/*.{c,h} and maps each file to its
module: within src/mcp the file's stem (mcp/session for session.c and
session.h), elsewhere its directory under SRC (approval, host, ...).  A
cycle among the modules fails the check and is printed, as is a cycle
among the directories (src/mcp as one), and a directory of LAYERS that
includes one of a higher layer.

Includes alone do not see files that depend on each other through one
shared header (src/mcp had internal.h, declaring the functions of
session.c, tools.c and net.c, which called each other): so within src/mcp
the check also follows calls, from each .c file to the .c file that
defines a function its header declares, and a cycle there fails too.

    check_layers.py SRC                  check; exit 1 with the cycles
    check_layers.py --expect TEXT [--expect TEXT...] SRC
                                         pass only if the check fails and
                                         its report contains every TEXT (to
                                         test the checker on a bad tree)
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# Directories split into modules by file stem: their files must be layered too.
SPLIT = {"mcp"}

# The layers, lowest first: a directory here may include only itself and
# the directories before it (docs/architecture.md).  A directory not listed
# is only checked for cycles.
LAYERS = ["common", "proto", "audit", "policy", "image", "jail", "net", "approval", "hv",
          "host", "service", "mcp", "serve", "cli"]


def module_of(rel):
    parts = rel.split("/")
    if len(parts) == 1:
        return None
    if parts[0] in SPLIT:
        return parts[0] + "/" + os.path.splitext(parts[-1])[0]
    return parts[0]


def read_graph(src):
    """{module: {module: (file, included)}} for includes that resolve under src."""
    graph = {}
    for root, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            mod = module_of(rel)
            if mod is None:
                continue
            graph.setdefault(mod, {})
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                # Includes are relative to src (-Isrc), or to the including file's directory.
                for cand in (inc, os.path.join(os.path.dirname(rel), inc)):
                    cand = os.path.normpath(cand).replace(os.sep, "/")
                    if os.path.isfile(os.path.join(src, cand)):
                        to = module_of(cand)
                        if to is not None and to != mod:
                            graph[mod].setdefault(to, (rel, cand))
                        break
    return graph


def find_cycles(graph):
    """The strongly connected components with more than one node, and one cycle in each."""
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        # Tarjan's algorithm, iterative (no recursion limit on big trees).
        work = [(v, iter(sorted(graph.get(v, {}))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in sccs:
        members = set(comp)
        # A shortest way back to the start, inside the component.
        start = comp[0]
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, {})):
                    if w not in members:
                        continue
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        path.reverse()
        cycles.append((comp, path + [start]))
    return cycles


def collapse(graph):
    """The directory graph: split directories as one node."""
    out = {}
    for a, edges in graph.items():
        da = a.split("/")[0]
        out.setdefault(da, {})
        for b, why in edges.items():
            db = b.split("/")[0]
            if db != da:
                out[da].setdefault(db, why)
    return out


DEFINITION = re.compile(r"^(?!static\b)[A-Za-z_][^;(]*?\b([A-Za-z_]\w*)\s*(?:\(|\[\]\s*=)", re.M)
DECLARED = re.compile(r"\b([a-z_][a-z0-9_]*)\s*(?:\(|\[\])")
COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


def read_calls(src):
    """Within each split directory: {file module: {defining module: (file, name)}}."""
    graph = {}
    for d in sorted(SPLIT):
        base = os.path.join(src, d)
        if not os.path.isdir(base):
            continue
        texts = {}
        for name in sorted(os.listdir(base)):
            if name.endswith((".c", ".h")):
                with open(os.path.join(base, name), encoding="utf-8", errors="replace") as f:
                    texts[name] = COMMENT.sub(" ", f.read())
        declared = set()
        for name, text in texts.items():
            if name.endswith(".h"):
                declared.update(DECLARED.findall(text))
        definer = {}
        for name, text in texts.items():
            if name.endswith(".c"):
                for fn in DEFINITION.findall(text):
                    if fn in declared:
                        definer[fn] = d + "/" + name[:-2]
        for name, text in texts.items():
            if not name.endswith(".c"):
                continue
            mod = d + "/" + name[:-2]
            graph.setdefault(mod, {})
            for fn, to in sorted(definer.items()):
                if to != mod and re.search(r"\b" + fn + r"\b", text):
                    graph[mod].setdefault(to, (d + "/" + name, fn))
    return graph


def check(src):
    graph = read_graph(src)
    problems = []
    calls = read_calls(src)
    for title, g in (("modules", graph), ("directories", collapse(graph)), ("calls", calls)):
        for comp, path in find_cycles(g):
            kind = "call" if title == "calls" else "include"
            problems.append(f"{kind} cycle among {title}: {' -> '.join(path)}")
            for a, b in zip(path, path[1:]):
                f, what = g[a][b]
                if title == "calls":
                    problems.append(f"    {a} -> {b}: {f} uses {what}()")
                else:
                    problems.append(f"    {a} -> {b}: {f} includes \"{what}\"")
    dirs = collapse(graph)
    for i, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: i + 1])
        for to, (f, inc) in sorted(dirs.get(layer, {}).items()):
            if to not in allowed:
                problems.append(f"layer {layer} includes the higher {to}: {f} includes \"{inc}\"")
    return problems


def main(argv):
    expect = []
    while len(argv) >= 3 and argv[1] == "--expect":
        expect.append(argv[2])
        argv = [argv[0]] + argv[3:]
    if len(argv) != 2 or not os.path.isdir(argv[1]):
        print("usage: check_layers.py [--expect TEXT] SRC_DIR", file=sys.stderr)
        return 2
    problems = check(argv[1])
    report = "\n".join(problems)
    if expect:
        missing = [e for e in expect if e not in report]
        if not missing:
            print(f"check_layers: found, as expected:\n{report}")
            return 0
        print(f"check_layers: expected a report with {missing}, got:\n{report or '(none)'}",
              file=sys.stderr)
        return 1
    if problems:
        print(report, file=sys.stderr)
        return 1
    n = len(read_graph(argv[1]))
    print(f"check_layers: {n} modules, no cycles, the layers hold")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
