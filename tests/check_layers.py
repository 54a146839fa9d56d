#!/usr/bin/env python3
"""Fails, naming file:line, when an #include reaches a layer above the including file's layer.

Layers, bottom to top (design.md, Layout): core <- kernels <- loaders <- runtime <- parallel <- launch.
A file may include its own layer and the layers below it. Quoted includes are read as paths from
the repository root ("runtime/model.h"), or else from the including file's folder ("../x.h"); an
include that names no layer (a system or third-party header) is not checked.

Usage: check_layers.py [ROOT]     checks ROOT (default: the repository this script is in)
       check_layers.py --self-test checks that a planted upward include is found
"""
import os
import re
import sys
import tempfile

LAYERS = ["core", "kernels", "loaders", "runtime", "parallel", "launch"]
SOURCES = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def layer_of(path):
    """The layer of a path relative to the root, or None outside the layers."""
    top = path.replace(os.sep, "/").split("/")[0]
    return top if top in LAYERS else None


def included_layer(root, src, target):
    if layer_of(target) and os.path.exists(os.path.join(root, target)):
        return layer_of(target)
    beside = os.path.relpath(os.path.normpath(os.path.join(root, os.path.dirname(src), target)), root)
    if os.path.exists(os.path.join(root, beside)):
        return layer_of(beside)
    return layer_of(target)  # a root path to a file not (yet) there still names its layer


def violations(root):
    """Yields 'file:line: ...' for each upward include under root's layer folders."""
    for layer in LAYERS:
        for folder, _, files in sorted(os.walk(os.path.join(root, layer))):
            for name in sorted(files):
                if not name.endswith(SOURCES):
                    continue
                src = os.path.relpath(os.path.join(folder, name), root)
                with open(os.path.join(root, src), encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        to = included_layer(root, src, m.group(1))
                        if to and LAYERS.index(to) > LAYERS.index(layer):
                            yield (f"{src}:{n}: {layer}/ includes \"{m.group(1)}\" from {to}/, a layer above it "
                                   f"(layers, bottom to top: {' <- '.join(LAYERS)})")


def check(root):
    found = list(violations(root))
    for v in found:
        print(v)
    if found:
        print(f"{len(found)} include(s) run upward", file=sys.stderr)
        return 1
    print(f"layers: no include runs upward ({' <- '.join(LAYERS)})")
    return 0


def self_test():
    """A tree with one upward include (loaders -> runtime) and allowed ones must give exactly it."""
    with tempfile.TemporaryDirectory() as root:
        files = {
            "core/a.h": '#include "core/b.h"\n',
            "core/b.h": "",
            "kernels/k.h": '#include <vector>\n#include "core/a.h"\n',
            "loaders/l.cpp": '#include "kernels/k.h"\n#include "../runtime/r.h"\n  #  include "runtime/r.h"\n',
            "runtime/r.h": '#include "loaders/l.h"\n',
            "loaders/l.h": "",
        }
        for path, text in files.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write(text)
        got = [v.split(" ")[0] for v in violations(root)]
        want = ["loaders/l.cpp:2:", "loaders/l.cpp:3:"]
        if got != want:
            print(f"self-test: found {got}, expected {want}")
            return 1
    print("self-test: the planted upward includes are found, the allowed ones are not")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
