#!/usr/bin/env python3
"""Checks that the C files of src/ form a one-way pipeline.

Compiles each src/*.c to an object file of its own and reads its symbols with nm: the kp_* and
luaopen_* functions and data it defines (T, D, R, B) and the ones it uses (U). File A depends on
file B when A uses a symbol B defines. Fails (exit 1) on a cycle, naming it, and on a use of a
symbol that no file defines. Also checks that src/kp.h declares each file's section in an order
where every file uses only sections above its own, and that the only local includes are
kp.h (from the .c files) and compat.h (from kp.h). Prints the graph (file: files it uses).

Usage: mk/deps_graph.py CC CFLAGS... (the flags that compile src/*.c)
"""
import os
import re
import subprocess
import sys
import tempfile

SRC = "src"


def symbols(obj):
    defined, used = set(), set()
    out = subprocess.run(["nm", obj], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        kind, name = parts[-2], parts[-1]
        if not re.match(r"^(kp_|luaopen_)", name):
            continue
        if kind == "U":
            used.add(name)
        elif kind in "TDRB":
            defined.add(name)
    return defined, used


def find_cycle(graph):
    """A list of files forming a cycle, or None (depth-first search, colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def local_includes(path):
    """Our own headers (files of src/) that path includes."""
    with open(path) as f:
        names = re.findall(r'^\s*#\s*include\s+"([^"]+)"', f.read(), re.M)
    return [n for n in names if os.path.exists(os.path.join(SRC, n))]


def include_problems(files):
    """The .c files include kp.h and nothing else of ours; kp.h includes compat.h only: one
    header chain, so no include cycle is possible."""
    problems = []
    for f in files:
        extra = [h for h in local_includes(os.path.join(SRC, f)) if h != "kp.h"]
        if extra:
            problems.append("%s includes %s (only kp.h)" % (f, ", ".join(extra)))
    for h, allowed in (("kp.h", ["compat.h"]), ("compat.h", [])):
        extra = [i for i in local_includes(os.path.join(SRC, h)) if i not in allowed]
        if extra:
            problems.append("%s includes %s" % (h, ", ".join(extra)))
    return problems


def header_order():
    """Files in the order of their sections in kp.h ("/* ---- file.c: ...")."""
    with open(os.path.join(SRC, "kp.h")) as f:
        return re.findall(r"^/\* ---- (\w+\.c)\b", f.read(), re.M)


def main():
    cc, cflags = sys.argv[1], sys.argv[2:]
    files = sorted(f for f in os.listdir(SRC) if f.endswith(".c"))
    defines, uses = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            obj = os.path.join(tmp, f[:-2] + ".o")
            subprocess.run([cc] + cflags + ["-c", "-o", obj, os.path.join(SRC, f)], check=True)
            defines[f], uses[f] = symbols(obj)
    owner = {}
    for f in files:
        for name in defines[f]:
            owner[name] = f
    problems = include_problems(files)
    graph = {f: set() for f in files}
    for f in files:
        for name in sorted(uses[f]):
            if name not in owner:
                problems.append("%s uses %s, which no file defines" % (f, name))
            elif owner[name] != f:
                graph[f].add(owner[name])
    for f in files:
        print("%-12s -> %s" % (f, " ".join(sorted(graph[f])) or "(leaf)"))
    cycle = find_cycle(graph)
    if cycle:
        problems.append("call cycle: " + " -> ".join(cycle))
    order = header_order()
    missing = [f for f in files if f not in order]
    if missing:
        problems.append("kp.h has no section for " + ", ".join(missing))
    rank = {f: i for i, f in enumerate(order)}
    for f in files:
        for g in sorted(graph[f]):
            if f in rank and g in rank and rank[g] > rank[f]:
                problems.append("%s uses %s, whose kp.h section comes after its own" % (f, g))
    for p in problems:
        print("deps-graph: " + p, file=sys.stderr)
    if problems:
        return 1
    print("deps-graph: %d files, one-way (no cycle), kp.h sections in pipeline order" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
