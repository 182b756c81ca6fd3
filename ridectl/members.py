"""`ridectl members`: every driver replica's view of the cluster (SWIM membership), and
whether the views agree."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from deploy.local.lifecycle import running
from services.driver.client import ReplicaView, agreed, views
from services.runtime.topology import member_address, replicas_of, service


def replica_addresses() -> list[str]:
    """The sidecar address of each driver replica of the running stack."""
    return [member_address(r) for r in replicas_of(service("driver"), running().replica_counts())]


def _when(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def _text(found: list[ReplicaView]) -> str:
    lines = []
    for view in found:
        if view.error:
            lines.append(f"replica {view.replica}: no answer ({view.error})")
            continue
        alive = sum(1 for m in view.members if m.state == "alive")
        lines.append(f"replica {view.replica}: {alive} alive of {len(view.members)} known")
        for m in view.members:
            lines.append(f"  {m.member:<18} {m.state:<8} incarnation {m.incarnation:<3} since {_when(m.changed_at_ms)}")
    verdict = "views agree" if agreed(found) else "views DISAGREE"
    lines.append(f"{verdict} ({len(found)} replicas asked)")
    return "\n".join(lines)


def members(args: argparse.Namespace) -> int:
    found = asyncio.run(views(replica_addresses()))
    if args.json:
        print(
            json.dumps(
                {
                    "agreed": agreed(found),
                    "replicas": [
                        {
                            "replica": v.replica,
                            "error": v.error,
                            "members": [m.__dict__ for m in v.members],
                        }
                        for v in found
                    ],
                }
            )
        )
    else:
        print(_text(found))
    return 0 if agreed(found) else 1
