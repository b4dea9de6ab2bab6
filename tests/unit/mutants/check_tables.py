"""After a mutmut run: the survivors that no equivalence table names, and the rows that name a
mutant that did not survive (killed since, or renumbered). Exit 1 if there is either.

    .venv/bin/python tests/unit/mutants/check_tables.py      # from the repository, after `mutmut run`

A table row names its mutants in its first cell: a full name (`x_plan__mutmut_20`, with or
without the module and the class) and then more numbers of the same function (`_26`, `_52`).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TABLES = [ROOT / "tests/unit/MUTANTS.md", *sorted((ROOT / "tests/unit/mutants").glob("*.md"))]
SURVIVED = 0
PREFIX = re.compile(r"^x(ǁ\w+ǁ|_)")  # mutmut's x_ (a function) or xǁClassǁ (a method)


def named_in_tables() -> set[str]:
    names: set[str] = set()
    for table in TABLES:
        for line in table.read_text(encoding="utf-8").splitlines():
            if not line.startswith("|"):
                continue
            function = None
            for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
                full = re.search(r"([\wǁ]+__mutmut_)(\d+)$", token.split(".")[-1])
                if full:
                    function = PREFIX.sub("", full.group(1))
                    names.add(function + full.group(2))
                elif function and re.fullmatch(r"_\d+", token):
                    names.add(function + token[1:])
    return names


def main() -> int:
    outcomes: Counter[tuple[str, int | None]] = Counter()
    survivors: dict[str, str] = {}
    for meta in sorted((ROOT / "mutants/autoscaler").glob("**/*.meta")):
        for name, exit_code in json.loads(meta.read_text())["exit_code_by_key"].items():
            outcomes[(name.split(".")[1], exit_code)] += 1
            if exit_code == SURVIVED:
                survivors[PREFIX.sub("", name.split(".")[-1])] = name
    if not outcomes:
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 2
    for (package, exit_code), count in sorted(outcomes.items(), key=str):
        print(f"{package}: exit code {exit_code}: {count}")
    named = named_in_tables()
    unexplained = sorted(full for short, full in survivors.items() if short not in named)
    stale = sorted(named - set(survivors))
    print(f"survivors no table names: {len(unexplained)}")
    for name in unexplained:
        print(f"  {name}")
    print(f"rows naming a mutant that did not survive: {len(stale)}")
    for name in stale:
        print(f"  {name}")
    return 1 if unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
