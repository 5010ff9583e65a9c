"""Prints the largest stack frames from `llvm-readobj --stack-sizes` (stdin), demangled."""

import re
import subprocess
import sys

entries = re.findall(r"Functions: \[([^\]]*)\]\s*Size: (0x[0-9a-f]+)", sys.stdin.read())
top = sorted(((int(size, 16), name) for name, size in entries), reverse=True)[:6]
names = [name for _, name in top]
try:
    demangled = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True
    ).stdout.splitlines()
except (OSError, subprocess.CalledProcessError):
    demangled = names
for (size, _), name in zip(top, demangled):
    print(f"{size:>7} B  {name}")
