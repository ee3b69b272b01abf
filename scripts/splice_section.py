#!/usr/bin/env python3
"""splice_section.py FILE HEADING: replaces the section of FILE that starts with HEADING (up to the next
"## " heading) with stdin, or inserts stdin before the kept sections (Soak, Security changes) or at the end."""
import sys

path, heading = sys.argv[1], sys.argv[2]
new = sys.stdin.read().rstrip("\n") + "\n"
lines = open(path).read().split("\n")
start = next((i for i, l in enumerate(lines) if l.startswith(heading)), None)
if start is None:
    start = next((i for i, l in enumerate(lines) if l.startswith(("## Soak", "## Security changes"))), len(lines))
    end = start
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
out = lines[:start] + new.split("\n") + lines[end:]
open(path, "w").write("\n".join(out))
