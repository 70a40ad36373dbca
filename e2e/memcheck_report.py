"""Reads the reports valgrind's memcheck wrote for each Envoy of `make memcheck` and sorts its
errors by where they happened: in the gateway's module (any frame in libbedrock_gateway.so), or in
Envoy alone. Exits 1 if the module has any, or if there are no reports at all."""

import re
import sys
from pathlib import Path

ERROR_START = re.compile(r"^==\d+== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
                         r"Mismatched free|Source and destination overlap|Argument .* of function)")


def errors(report: str) -> list:
    """Each error's lines, from its first line to the blank record that ends it."""
    found, current = [], None
    for line in report.splitlines():
        if ERROR_START.match(line):
            current = [line]
            found.append(current)
        elif current is not None:
            if line.rstrip().endswith("==") or re.fullmatch(r"==\d+==\s*", line):
                current = None
            else:
                current.append(line)
    return found


def main(directory: str) -> int:
    reports = sorted(Path(directory).glob("*.memcheck"))
    module, envoy_only = [], 0
    for report in reports:
        for error in errors(report.read_text(errors="replace")):
            if any("libbedrock_gateway" in line for line in error):
                module.append((report.name, error))
            else:
                envoy_only += 1
    print(f"memcheck: {len(reports)} Envoy processes checked; {envoy_only} errors inside Envoy alone "
          f"(its start-up's uninitialised reads, see ../shared/notes/memory-checking.md); "
          f"{len(module)} with a frame in the gateway's module")
    for name, error in module:
        print(f"--- {name}")
        print("\n".join(error[:25]))
    if not reports:
        print("memcheck: no reports were written")
        return 1
    return 1 if module else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
