#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What abidiff cannot judge alone, between a baseline and a fresh abidw dump of one library.

1. Symbols: a symbol that is new must come in a version node the baseline does not have, or in
   a node still open: LIBUFFD[_HTTP]_X.Y is open while the project version is below X.Y.0 (the
   release that ships it closes it).
2. The structs with reserved space (--struct NAME, repeatable): the same size; every member of
   the baseline other than reserved ones (name starting with "reserved") keeps its name, offset
   and type; a new member lies inside the room of a baseline reserved member. abidiff is then
   told (abi/reserved.suppr) not to report the carving, which it cannot tell from a reorder.

usage: abi-policy.py BASELINE.abi NEW.abi PROJECT-VERSION [--struct NAME]...
Exit 0 when the policy holds; 1 with one line per violation otherwise.
"""
import re
import sys
import xml.etree.ElementTree as ET


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def load(path):
    root = ET.parse(path).getroot()
    types = {}
    for el in root.iter():
        if "id" in el.attrib and el.tag != "abi-corpus":
            types.setdefault(el.attrib["id"], el)
    syms = {}
    for el in root.iter("elf-symbol"):
        if el.attrib.get("is-defined") == "yes":
            syms[el.attrib["name"]] = el.attrib.get("version", "")
    structs = {}
    for el in root.iter("class-decl"):
        name = el.attrib.get("name")
        if name and el.attrib.get("is-declaration-only") != "yes" and name not in structs:
            structs[name] = el
    return types, syms, structs


def type_name(types, tid, depth=0):
    """A type described by its kind, name, size and what it is made of: comparable across
    two dumps whatever their type ids."""
    el = types.get(tid)
    if el is None or depth > 8:
        return "?" + tid if el is None else "..."
    tag = el.tag
    name = el.attrib.get("name", "")
    size = el.attrib.get("size-in-bits", "")
    inner = el.attrib.get("type-id")
    if tag in ("type-decl", "class-decl", "union-decl", "enum-decl") and name:
        return f"{tag}:{name}:{size}"
    if tag == "array-type-def":
        dims = [s.attrib.get("length", "") for s in el.iter("subrange")]
        return f"{type_name(types, inner, depth + 1)}[{','.join(dims)}]"
    if tag == "function-type":
        parts = [type_name(types, p.attrib.get("type-id", ""), depth + 1)
                 for p in el.iter("parameter") if "type-id" in p.attrib]
        ret = el.find("return")
        r = type_name(types, ret.attrib.get("type-id", ""), depth + 1) if ret is not None else ""
        return f"fn({','.join(parts)})->{r}"
    quals = ",".join(f"{k}" for k in ("const", "volatile", "restrict") if el.attrib.get(k) == "yes")
    return f"{tag}:{name}:{quals}:{size}({type_name(types, inner, depth + 1) if inner else ''})"


def type_size(types, tid, depth=0):
    """Size in bits, through typedefs and qualifiers."""
    el = types.get(tid)
    if el is None or depth > 8:
        return 0
    if "size-in-bits" in el.attrib:
        return int(el.attrib["size-in-bits"])
    return type_size(types, el.attrib.get("type-id", ""), depth + 1)


def members(el):
    out = []
    for dm in el.findall("data-member"):
        var = dm.find("var-decl")
        if var is None:
            continue
        out.append((var.attrib.get("name", ""), int(dm.attrib.get("layout-offset-in-bits", "0")),
                    var.attrib.get("type-id", "")))
    return out


def main(argv):
    structs_wanted = []
    args = []
    it = iter(argv[1:])
    for a in it:
        if a == "--struct":
            structs_wanted.append(next(it))
        else:
            args.append(a)
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base_path, new_path, project = args
    bt, bsyms, bstructs = load(base_path)
    nt, nsyms, nstructs = load(new_path)
    project_v = version_tuple(project)
    problems = []

    base_nodes = set(bsyms.values())
    for name, node in sorted(nsyms.items()):
        if name in bsyms or name == node:  # node == name: the node's own version symbol
            continue
        m = re.match(r"^LIBUFFD_(?:HTTP_)?(\d+)\.(\d+)$", node)
        open_node = m and project_v < (int(m.group(1)), int(m.group(2)), 0)
        if node in base_nodes and not open_node:
            problems.append(f"new symbol {name}@{node}: {node} is released; a new function goes "
                            "into a new version node")

    for s in structs_wanted:
        if s not in bstructs:
            problems.append(f"struct {s}: not in the baseline")
            continue
        if s not in nstructs:
            problems.append(f"struct {s}: gone from the new build")
            continue
        b, n = bstructs[s], nstructs[s]
        if b.attrib.get("size-in-bits") != n.attrib.get("size-in-bits"):
            problems.append(f"struct {s}: size changed from {b.attrib.get('size-in-bits')} to "
                            f"{n.attrib.get('size-in-bits')} bits")
        bm, nm = members(b), members(n)
        nmap = {name: (off, type_name(nt, tid)) for name, off, tid in nm}
        room = []
        for name, off, tid in bm:
            if name.startswith("reserved"):
                room.append((off, off + type_size(bt, tid)))
                continue
            want = (off, type_name(bt, tid))
            got = nmap.get(name)
            if got is None:
                problems.append(f"struct {s}: member {name} is gone")
            elif got != want:
                problems.append(f"struct {s}: member {name} changed: offset {want[0]} -> "
                                f"{got[0]}, type {want[1]} -> {got[1]}")
        bnames = {name for name, _, _ in bm}
        for name, off, tid in nm:
            if name in bnames and not name.startswith("reserved"):
                continue
            end = off + type_size(nt, tid)
            if not any(lo <= off and end <= hi for lo, hi in room):
                problems.append(f"struct {s}: member {name} at bit {off} is outside the "
                                "baseline's reserved room")
    for p in problems:
        print(f"abi-policy: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
