"""Checks the "paper -> code" table at the end of docs/method.md against the source tree.

Every code reference in the table's last column is written `path` or `path:name`. For each, the file
must exist under the repository root, and `name` (a function, class or Class::method) must occur in
it as a whole word. A failure names the table row, the reference and what is wrong.

usage:
  python3 scripts/check-method-table.py [ROOT]   ROOT: the repository root (default: this script's parent's parent)
exit status: 0 when every reference holds, 1 otherwise (including a missing or table-less docs/method.md).
"""
import re
import sys
from pathlib import Path

HEADING = re.compile(r"^#+\s.*paper\s*(->|→)\s*code", re.IGNORECASE)
REFERENCE = re.compile(r"`([\w./-]+\.(?:cpp|h|hpp|cc|py|sh))(?::([\w:~]+))?`")


def cells(line):
    """The cells of a Markdown table row, without the outer pipes."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_rows(text):
    """[(row label, last cell)] of the first table after the "paper -> code" heading."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if HEADING.match(line)), None)
    if start is None:
        return None
    rows, in_table = [], False
    for line in lines[start + 1:]:
        if line.lstrip().startswith("|"):
            in_table = True
            row = cells(line)
            if all(re.fullmatch(r":?-+:?", cell) for cell in row):
                continue  # the separator line
            rows.append((row[0], row[-1]))
        elif in_table or line.startswith("#"):
            break
    return rows[1:]  # without the header row


def occurs(name, text):
    return re.search(r"(?<![\w:])" + re.escape(name) + r"(?![\w])", text) is not None


def check(root):
    method = root / "docs" / "method.md"
    if not method.is_file():
        return [f"{method}: no such file"]
    rows = table_rows(method.read_text(encoding="utf-8"))
    if not rows:
        return [f"{method}: no table after a heading that says 'paper -> code'"]
    problems = []
    for label, code in rows:
        references = REFERENCE.findall(code)
        if not references:
            problems.append(f"row '{label}': no `file` or `file:function` in its code column")
        for path, name in references:
            source = root / path
            if not source.is_file():
                problems.append(f"row '{label}': {path} does not exist")
            elif name and not occurs(name, source.read_text(encoding="utf-8", errors="replace")):
                problems.append(f"row '{label}': {path} has no '{name}'")
    return problems


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 1
    root = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent.parent
    problems = check(root.resolve())
    for problem in problems:
        print(f"check-method-table: {problem}", file=sys.stderr)
    if not problems:
        print("check-method-table: every reference of docs/method.md's paper -> code table holds")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
