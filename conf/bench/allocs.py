"""Heap allocations per request from a callgrind profile (calls into the allocator's entry
points). Used by instructions.sh: python3 allocs.py <callgrind.out> <requests>"""
import re
import subprocess
import sys

ENTRY = re.compile(r"(mi_malloc_aligned|mi_zalloc_aligned|mi_realloc_aligned|__libc_malloc|__libc_calloc|__libc_realloc|^malloc$|^calloc$|^realloc$)")
out = subprocess.run(["callgrind_annotate", "--tree=caller", "--threshold=100", sys.argv[1]],
                     capture_output=True, text=True).stdout
calls, pending = 0, 0
for line in out.splitlines():
    m = re.search(r"<\s+\S*?:(\S+).*\(([\d,]+)x\)", line)
    if m:
        # Calls from inside the allocator are not the program's allocations.
        if not re.match(r"_?mi_", m.group(1)):
            pending += int(m.group(2).replace(",", ""))
        continue
    m = re.search(r"\*\s+\S*?:(\S+)", line)
    if m:
        name = m.group(1)
        if ENTRY.search(name):
            calls += pending
        pending = 0
print(f"{calls / float(sys.argv[2]):.1f}")
