#!/usr/bin/env python3
"""Structure of the workspace: lines of code per folder, the longest functions, and import
circles (files of one crate that import each other through `use crate::`/`super::`).

    python3 scripts/structure.py [ROOT]

Test files and `#[cfg(test)]` modules are left out. A rough reader (regular expressions, not a
parser): good for a before/after table, not a verdict."""
import os, re, sys, collections
root = sys.argv[1] if len(sys.argv) > 1 else '.'
files = []
for dp, dn, fn in os.walk(root):
    rel = os.path.relpath(dp, root)
    dn[:] = [d for d in dn if d not in ('target', '.git')]
    if any(part == 'tests' for part in rel.split(os.sep)):
        continue
    for f in fn:
        if f.endswith('.rs') and f != 'tests.rs':
            files.append(os.path.normpath(os.path.join(rel, f)))
def strip_tests(src):
    # drop `#[cfg(test)] mod tests { ... }` blocks
    m = re.search(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{', src)
    if not m:
        return src
    depth, j = 0, m.end() - 1
    while j < len(src):
        if src[j] == '{': depth += 1
        elif src[j] == '}':
            depth -= 1
            if depth == 0: break
        j += 1
    return strip_tests(src[:m.start()] + src[j+1:])
lines = {}
funcs = []
for f in files:
    src = strip_tests(open(os.path.join(root, f)).read())
    lines[f] = src.count('\n')
    for m in re.finditer(r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:unsafe\s+)?(?:extern\s+"C"\s+)?fn\s+(\w+)[^;{]*\{', src, re.M):
        depth, j = 0, m.end() - 1
        while j < len(src):
            c = src[j]
            if c == '{': depth += 1
            elif c == '}':
                depth -= 1
                if depth == 0: break
            j += 1
        n = src[m.start():j].count('\n') + 1
        funcs.append((n, f, m.group(1)))
# crate roots: dirs containing Cargo.toml with src/
def crate_of(f):
    parts = f.split(os.sep)
    if 'src' in parts:
        i = parts.index('src')
        return os.sep.join(parts[:i]), os.sep.join(parts[i+1:])
    return None, None
mods = collections.defaultdict(dict)
for f in files:
    c, rel = crate_of(f)
    if c is None: continue
    m = rel[:-3]
    if m.endswith('/mod'): m = m[:-4]
    if m in ('lib', 'main'): m = ''
    mods[c][m.replace('/', '::')] = f
edges = collections.defaultdict(set)
for c, ms in mods.items():
    for m, f in ms.items():
        src = strip_tests(open(os.path.join(root, f)).read())
        for u in re.finditer(r'\b(crate|super)((?:::\w+)+)', src):
            base = m.split('::') if m else []
            if u.group(1) == 'super':
                # super relative to module file
                base = base[:-1] if base else []
            else:
                base = []
            path = base + u.group(2).strip(':').split('::')
            # longest prefix that is a module
            for k in range(len(path), 0, -1):
                cand = '::'.join(path[:k])
                if cand in ms and ms[cand] != f:
                    edges[f].add(ms[cand]); break
# Tarjan SCC
index, low, st, on, sccs, cnt = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def sc(v):
    index[v] = low[v] = cnt[0]; cnt[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            sc(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(lines):
    if v not in index: sc(v)
by_top = collections.Counter()
for f, n in lines.items():
    by_top[f.split(os.sep)[0]] += n
total = sum(lines.values())
print('lines (non-test code) by top folder:', ', '.join(f'{k} {v} ({100*v//total}%)' for k, v in by_top.most_common()))
print('files:', len(lines), ' largest:', ', '.join(f'{f} {n}' for f, n in sorted(lines.items(), key=lambda x: -x[1])[:8]))
print('longest functions:', ', '.join(f'{name} ({f}) {n}' for n, f, name in sorted(funcs, reverse=True)[:10]))
print('functions over 100 lines:', sum(1 for n, _, _ in funcs if n > 100))
print('import circles:', len(sccs))
for s in sccs: print('  ', ' <-> '.join(s))
