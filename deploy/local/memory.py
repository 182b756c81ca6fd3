"""Resident memory of a process and all its descendants, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name (field 2) may hold spaces; the parent pid follows its ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pids: list[int]) -> dict[int, int]:
    """For each pid, the resident set of it and its descendants, in KiB."""
    children = _children()
    totals = {}
    for root in pids:
        stack, seen, total = [root], set(), 0
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += _rss_kb(pid)
            stack.extend(children.get(pid, []))
        totals[root] = total
    return totals
