#!/usr/bin/env python3
"""Fails when two source files of a crate import each other, directly or round a longer circle.

    python3 scripts/circles.py [CRATE_SRC_DIR ...]   # default: every crate's src/ in the workspace
    python3 scripts/circles.py --self-test           # a planted circle must be found

A file's imports are every `crate::`, `super::` and `self::` path in it (in `use` trees and inline
in code), and `use m::...` of a module `m` it declares; each path resolves to the file of the
longest module prefix that exists. A module's own `mod.rs` re-exporting its children is not a
circle with them unless a child also names the parent's items: that is the circle reported.
Comments and string literals are ignored. Exit 1 with one line per circle; 0 when there is none.
"""
import os
import re
import sys
import tempfile

PATH = re.compile(r"\b(crate|super|self)((?:\s*::\s*(?:\w+|\{))+)")


def strip(text):
    """Source without comments, string and char literals (kept as blanks, lines preserved)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 80]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append("\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12]):
            i += len(re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def use_tree_paths(tree):
    """Expand a `use` tree (`a::{b, c::{d, e}}`) into its paths (lists of segments)."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    paths = []

    def expand(prefix, t):
        depth, parts, cur = 0, [], ""
        for ch in t:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        for p in parts:
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                expand(prefix + [s for s in head.split("::") if s], rest[:-1] if rest.endswith("}") else rest)
            else:
                paths.append(prefix + [s for s in p.split("::") if s])

    expand([], tree)
    return paths


def modules(src):
    """Map module path (tuple) -> file, for every .rs file under a crate's src/."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == "mod" or (len(rel) == 1 and rel[0] in ("lib", "main")):
                rel = rel[:-1]
            if len(rel) == 0 and tuple() in mods:
                continue  # lib.rs beside main.rs: one crate root is enough for the graph
            mods[tuple(rel)] = os.path.join(root, f)
    return mods


def is_mod_file(path):
    base = os.path.basename(path)
    return base in ("mod.rs", "lib.rs", "main.rs")


def edges(src):
    mods = modules(src)
    graph = {f: set() for f in mods.values()}
    for mpath, f in mods.items():
        text = strip(open(f, encoding="utf-8").read())
        # The module a `self::` path names: this file's; `super::` its parent's.
        here = mpath
        declared = set(re.findall(r"\bmod\s+(\w+)\s*;", text))
        raw = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            raw.extend(use_tree_paths(m.group(1)))
        for m in PATH.finditer(text):
            seg = [m.group(1)] + [s for s in re.split(r"\s*::\s*", m.group(2)) if s and s != "{"]
            raw.append(seg)
        for seg in raw:
            if not seg:
                continue
            if seg[0] == "crate":
                base, rest = (), seg[1:]
            elif seg[0] in ("self", "super"):
                base, rest = here, list(seg)
                while rest and rest[0] in ("self", "super"):
                    if rest[0] == "super":
                        base = base[:-1]
                    rest = rest[1:]
            elif seg[0] in declared:
                base, rest = here, seg
            else:
                continue
            target = None
            for k in range(len(rest), -1, -1):
                cand = tuple(base) + tuple(rest[:k])
                if cand in mods:
                    target = mods[cand]
                    break
            if target and target != f:
                # A parent naming its own child module (declaring or re-exporting it) is not an
                # import the other way round.
                graph[f].add(target)
    return graph


def cycles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def parent_child(a, b):
    """Whether one of two files is the mod.rs of the other's directory (parent and child)."""
    for p, c in ((a, b), (b, a)):
        if is_mod_file(p) and os.path.dirname(c).startswith(os.path.dirname(p)):
            return True
    return False


def check(srcs):
    found = []
    for src in srcs:
        g = edges(src)
        # Edges from a module to its descendants (declaring, re-exporting) are the tree itself:
        # only the other direction, a child naming its ancestor, can close a circle with them.
        for f in g:
            g[f] = {t for t in g[f] if not (is_mod_file(f) and t.startswith(os.path.dirname(f) + os.sep))}
        for comp in cycles(g):
            found.append(comp)
    return found


def workspace_srcs(root):
    srcs = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("target", ".git", "node_modules")]
        if "Cargo.toml" in files and os.path.isdir(os.path.join(dirpath, "src")):
            srcs.append(os.path.join(dirpath, "src"))
    return sorted(srcs)


def self_test():
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "src")
        os.makedirs(os.path.join(src, "a"))
        files = {
            "lib.rs": "mod a; mod b; mod c;\n",
            "a/mod.rs": "mod inner;\npub use inner::X;\n",
            "a/inner.rs": "pub struct X; // crate::b is only a comment\n",
            "b.rs": "pub fn f() -> usize { crate::c::g() }\n",
            "c.rs": 'use crate::{a::X, b::{self}};\npub fn g() -> usize { let _ = "crate::b"; 1 }\n',
        }
        for name, text in files.items():
            open(os.path.join(src, name), "w").write(text)
        found = check([src])
        names = [sorted(os.path.relpath(p, src) for p in comp) for comp in found]
        if names != [["b.rs", "c.rs"]]:
            print(f"self-test failed: expected the circle b.rs <-> c.rs, found {names}")
            return 1
        open(os.path.join(src, "b.rs"), "w").write("pub fn f() -> usize { 1 }\n")
        if check([src]):
            print("self-test failed: a circle reported after it was removed")
            return 1
    print("circles self-test: a planted circle is found, and only it")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = argv[1:] or workspace_srcs(root)
    found = check(srcs)
    for comp in found:
        print("import circle: " + " <-> ".join(os.path.relpath(p, root) for p in comp))
    if not found:
        print(f"no import circles in {len(srcs)} crates")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
