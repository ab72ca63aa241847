#!/usr/bin/env python3
"""Checks the code's shape (run by scripts/test.sh; exit 1 on a finding).

- no Swift file in Sources/ or Simulation/ over 450 lines (code generated from proto/ aside);
- no function, initializer or subscript over 80 lines, unless its first line says `// shape: table`;
- no reference to the team's design or platform notes that live outside the repo (their file names
  or the shared folder beside the checkout) anywhere but .ci/
Usage: python3 scripts/check-shape.py [ROOT]
"""
import os, re, sys

FILE_LINES_MAX = 450
FUNCTION_LINES_MAX = 80
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
os.chdir(root)

DECL = re.compile(r'^\s*(?:@[\w.]+(?:\([^)]*\))?\s+)*(?:(?:public|private|fileprivate|internal|package|static|'
                  r'final|override|mutating|nonmutating|nonisolated|convenience|required|class)\s+)*'
                  r'(func\s+[^\s(<]+|init[?!]?|deinit|subscript)\b')
STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def code_part(line):
    """The line without string literals and its // comment (good enough for brace counting)."""
    line = STRING.sub('""', line)
    cut = line.find("//")
    return line if cut < 0 else line[:cut]


def long_functions(path, lines):
    for i, line in enumerate(lines):
        match = DECL.match(line)
        if not match or "shape: table" in line:
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            for ch in code_part(lines[j]):
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth <= 0:
                break
            if not opened and j > i + 15:  # a protocol requirement: no body
                break
            j += 1
        if opened and j - i + 1 > FUNCTION_LINES_MAX:
            yield f"{path}:{i + 1}: {match.group(1)} is {j - i + 1} lines (at most {FUNCTION_LINES_MAX})"


findings = []
for top in ("Sources", "Simulation"):
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "Generated"]  # protoc's output (scripts/gen-proto.sh)
        for name in sorted(files):
            if not name.endswith(".swift"):
                continue
            path = os.path.join(folder, name)
            lines = open(path, encoding="utf-8").read().split("\n")
            if len(lines) - 1 > FILE_LINES_MAX:
                findings.append(f"{path}: {len(lines) - 1} lines (at most {FILE_LINES_MAX})")
            findings.extend(long_functions(path, lines))

OUTSIDE = re.compile(r"DESIGN(\.md| §)|PLATFORM\.md|\.\./shared")
for folder, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if not d.startswith(".build") and d not in (".git", ".ci", ".swiftpm")]
    for name in files:
        path = os.path.join(folder, name)
        if path == "./scripts/check-shape.py":
            continue
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.split("\n"), 1):
            if OUTSIDE.search(line):
                findings.append(f"{path[2:]}:{n}: points outside the repo: {line.strip()[:100]}")

for f in findings:
    print(f)
print(f"shape: {len(findings)} finding(s)")
sys.exit(1 if findings else 0)
