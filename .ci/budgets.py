#!/usr/bin/env python3
"""Budgets the code keeps: no library file over 600 non-test lines, no import
circle between a crate's top-level modules, no function over 80 lines in the
relay's session paths (transfer/, session_service, server).

Run from the repository root; exits 1 and names every breach.

- Non-test lines: a file's lines before its first `#[cfg(test)]`; files named
  `tests.rs` or under a `tests/` directory are test code and not counted.
- Import circles: an edge A -> B when a file of top-level module A names
  `crate::B` (directly or in a `use` group); module A's children naming A
  itself are not edges. A circle is a strongly connected set of two or more.
- Function length: from a line that opens an `fn` to the line that closes its
  body, counted by braces outside strings and comments (good enough for
  rustfmt-formatted code).
"""

import re
import sys
from pathlib import Path

FILE_BUDGET = 600
FN_BUDGET = 80
CRATES = ["protocol", "net", "relay", "endpoint"]
FN_CHECKED = ["relay/src/transfer", "relay/src/session_service.rs", "relay/src/server.rs"]


def non_test_lines(path: Path) -> int:
    count = 0
    for line in path.read_text().splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        count += 1
    return count


def is_test_file(path: Path) -> bool:
    return path.name == "tests.rs" or "tests" in path.parts[path.parts.index("src") + 1 : -1]


def top_module(src: Path, path: Path) -> str:
    first = path.relative_to(src).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def crate_refs(text: str):
    """Top-level modules a file names through `crate::`."""
    names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text, re.S):
        names.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    return names


def code_only(text: str) -> str:
    """`text` without its comments (doc links are not imports)."""
    return "\n".join(strip_noise(line) for line in text.splitlines())


def circles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def strip_noise(line: str) -> str:
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def long_functions(path: Path):
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("#[cfg(test)]"):
            break
        if re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s", lines[i]):
            name = re.search(r"fn\s+([A-Za-z0-9_]+)", lines[i]).group(1)
            depth, opened, j = 0, False, i
            while j < len(lines):
                code = strip_noise(lines[j])
                if not opened and ";" in code and "{" not in code:
                    break  # a declaration without a body
                depth += code.count("{") - code.count("}")
                opened = opened or "{" in code
                if opened and depth <= 0:
                    break
                j += 1
            length = j - i + 1
            if opened and length > FN_BUDGET:
                found.append((name, i + 1, length))
            i = j + 1 if opened else i + 1
            continue
        i += 1
    return found


def main() -> int:
    root = Path(".")
    breaches = []
    for crate in CRATES:
        src = root / crate / "src"
        graph = {}
        for path in sorted(src.rglob("*.rs")):
            if is_test_file(path):
                continue
            lines = non_test_lines(path)
            if lines > FILE_BUDGET:
                breaches.append(f"{path}: {lines} non-test lines (budget {FILE_BUDGET})")
            if path.name in ("lib.rs", "main.rs") and path.parent == src:
                continue
            module = top_module(src, path)
            text = path.read_text()
            if "#[cfg(test)]" in text:
                text = text[: text.index("#[cfg(test)]")]
            for target in crate_refs(code_only(text)):
                is_module = (src / f"{target}.rs").exists() or (src / target).is_dir()
                if is_module and target != module:
                    graph.setdefault(module, set()).add(target)
        for circle in circles(graph):
            breaches.append(f"{crate}: import circle between {', '.join(circle)}")
    for checked in FN_CHECKED:
        base = root / checked
        paths = [base] if base.is_file() else sorted(base.rglob("*.rs"))
        for path in paths:
            if is_test_file(path):
                continue
            for name, line, length in long_functions(path):
                breaches.append(f"{path}:{line}: fn {name} is {length} lines (budget {FN_BUDGET})")
    for breach in breaches:
        print(breach)
    if breaches:
        print(f"{len(breaches)} budget breach(es)", file=sys.stderr)
        return 1
    print("budgets kept: files, import circles, function lengths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
