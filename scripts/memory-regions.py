#!/usr/bin/env python3
"""Prints, every PERIOD seconds for SECONDS, each running bank's own memory by region, to
see which part grows during a long `txbank-lab bench` run started beside it:
glibc's main heap, its other arenas' heaps, thread stacks, other anonymous mappings, the
whole RssAnon, and the bank's thread count (docs/PERFORMANCE.md).
Usage: scripts/memory-regions.py [PERIOD] [SECONDS]   (defaults 30 and 630)"""
import os
import re
import subprocess
import sys
import time

ARENA_ALIGNMENT = 64 << 20  # glibc maps each non-main arena's heap at a 64 MiB boundary
MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$")


def pid_of(bank):
    found = subprocess.run(["pgrep", "-f", f"bank --preset {bank}"], capture_output=True, text=True).stdout.split()
    return found[0] if found else None


def region(start, end, perms, inode, path):
    """Which region a mapping's resident pages count towards, or None for file mappings."""
    if path == "[heap]":
        return "heap"
    if path.startswith("[stack"):
        return "stack"
    if inode != 0 or path or "w" not in perms:
        return None
    if start % ARENA_ALIGNMENT == 0:
        return "arena"
    if 2000 <= (end - start) // 1024 <= 2100 or (end - start) // 1024 in (8188, 8192, 8196):
        return "stack"  # Rust threads' 2 MiB stacks, glibc's 8 MiB default
    return "other"


def sample(pid):
    kib = {"heap": 0, "arena": 0, "stack": 0, "other": 0}
    current = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            mapping = MAPPING.match(line)
            if mapping:
                start, end = int(mapping[1], 16), int(mapping[2], 16)
                current = region(start, end, mapping[3], int(mapping[4]), mapping[5].strip())
            elif current and line.startswith("Rss:"):
                kib[current] += int(line.split()[1])
    with open(f"/proc/{pid}/status") as status:
        anon = next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))
    return len(os.listdir(f"/proc/{pid}/task")), kib, anon


def main():
    period = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 630
    print("second bank threads | heap arena stack other | RssAnon (MiB)", flush=True)
    for second in range(period, seconds + 1, period):
        time.sleep(period)
        for bank in ("bank1", "bank2"):
            pid = pid_of(bank)
            if not pid:
                continue
            try:
                threads, kib, anon = sample(pid)
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                continue  # the bank ended while it was read
            mib = " ".join(f"{kib[name] / 1024:.2f}" for name in ("heap", "arena", "stack", "other"))
            print(second, bank, threads, "|", mib, "|", f"{anon / 1024:.2f}", flush=True)


if __name__ == "__main__":
    main()
