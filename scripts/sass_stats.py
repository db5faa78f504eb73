#!/usr/bin/env python3
"""Static statistics of the tensor-core kernels' SASS (the output of `cuobjdump -sass`).

For every kernel: its instruction count, and inside its main loop (the longest backward branch
that holds HMMA instructions) the instruction count and the counts of the instruction classes
that matter for a kernel bound by issue slots: HMMA (tensor core), LDSM (ldmatrix), LDGSTS
(cp.async), MUFU (exp2), BAR (barriers), LDL/STL (spills), SHFL.

These are static counts: a branch's both sides are counted. scripts/kernel_sass.sh --full-path
compiles the kernels with their slow paths removed, so that the loop then holds what one full
tile executes. They say nothing about speed on their own; only a benchmark on a GPU does.

Usage: sass_stats.py FILE.sass [--json]
"""
import collections
import json
import re
import sys

CLASSES = ("HMMA", "LDSM", "LDGSTS", "MUFU", "BAR", "LDL", "STL", "SHFL")


def opcode(text):
    text = re.sub(r"^@!?U?P\w+\s+", "", text)  # predicate guard
    return text.split()[0] if text else ""


def parse(sass):
    """{kernel name: [(address, instruction text)]}."""
    kernels = {}
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
        name = part.split("\n", 1)[0].strip()
        kernels[name] = [(int(m.group(1), 16), m.group(2).strip())
                         for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", part)]
    return kernels


def counts(ins):
    c = collections.Counter(all=len(ins))
    for _, text in ins:
        op = opcode(text)
        for k in CLASSES:
            if op.startswith(k):
                c[k] += 1
    return dict(c)


def main_loop(ins):
    hmma = [a for a, t in ins if opcode(t).startswith("HMMA")]
    best = None
    for a, t in ins:
        op = opcode(t)
        if not op.startswith("BRA"):
            continue
        m = re.search(r"0x([0-9a-f]+)", t.split("BRA", 1)[1])
        if not m:
            continue
        target = int(m.group(1), 16)
        if target < a and any(target <= h <= a for h in hmma):
            if best is None or a - target > best[1] - best[0]:
                best = (target, a)
    return best


def short(name):
    m = re.search(r"(flash_\w+?_kernel)I(\w+?)Li(\d+)E", name)
    return "%s<%s,%s>" % (m.group(1), m.group(2).lstrip("0123456789_"), m.group(3)) if m else name


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = {}
    for name, ins in parse(open(sys.argv[1]).read()).items():
        entry = {"kernel": counts(ins)}
        loop = main_loop(ins)
        if loop:
            entry["main_loop"] = counts([(a, t) for a, t in ins if loop[0] <= a <= loop[1]])
        key = short(name)
        while key in out:
            key += "'"
        out[key] = entry
    if "--json" in sys.argv:
        print(json.dumps(out, indent=1))
        return
    for key, entry in out.items():
        loop = entry.get("main_loop", {})
        print("%-44s kernel %5d  main loop %5d  %s" % (
            key, entry["kernel"]["all"], loop.get("all", 0),
            " ".join("%s %d" % (k, loop.get(k, 0)) for k in CLASSES)))


if __name__ == "__main__":
    main()
