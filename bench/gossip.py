"""SWIM at scale, simulated: the membership code of services/blocks/swim.py, unchanged,
driven by a seeded in-process network that loses and delays messages, for 10 to 1000
members. No I/O, no wall clock: a run is replayed exactly by its seed.

Each run starts from a formed group (every member knows every other, alive at
incarnation 0), lets it settle for a few periods, then crashes one member (its messages
are dropped both ways) and measures, in protocol periods:

- detection: from the crash to the first member that suspects it (SWIM's analysis expects
  e/(e - 1) = 1.58 periods with no loss, whatever the group's size);
- declared: to the first member that declares it dead (detection plus the suspicion
  timeout, which grows with log10 N);
- spread: from that first declaration until every live member has it dead: the
  dissemination, expected to grow with log N;
- false positives: live members declared dead by anyone during a run without a crash, per
  member per 100 periods, against the loss rate and the suspicion timeout."""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.blocks.swim import Config, Message, Node, Send, State

TICK_MS = 25
LATENCY_MS = (1.0, 20.0)
SIZES = (10, 30, 100, 300, 1000)
LOSSES = (0.0, 0.05, 0.2)
SUSPICION_MULTS = (1.0, 4.0)


@dataclass
class Network:
    """Delivers each message after a random latency, or loses it; a crashed member
    neither sends nor receives, and a blocked pair of members cannot reach each other."""

    nodes: dict[str, Node]
    rng: random.Random
    loss: float = 0.0
    crashed: set[str] = field(default_factory=set)
    blocked: set[frozenset[str]] = field(default_factory=set)
    now_ms: float = 0.0
    sent: int = 0
    _queue: list[tuple[float, int, str, str, Message]] = field(default_factory=list)
    _n: int = 0

    def post(self, sender: str, sends: Iterable[Send]) -> None:
        for send in sends:
            self.sent += 1
            cut = frozenset((sender, send.to)) in self.blocked
            if sender in self.crashed or send.to in self.crashed or cut or self.rng.random() < self.loss:
                continue
            self._n += 1
            at = self.now_ms + self.rng.uniform(*LATENCY_MS)
            heapq.heappush(self._queue, (at, self._n, sender, send.to, send.message))

    def partition(self, side: Iterable[str]) -> None:
        """Cut `side` off from every other member (both ways); heal() removes the cut."""
        inside = set(side)
        self.blocked |= {frozenset((a, b)) for a in inside for b in self.nodes if b not in inside}

    def heal(self) -> None:
        self.blocked.clear()

    def run_until(self, done: Callable[[], bool], limit_ms: float) -> bool:
        """Steps until `done()` or `limit_ms` of simulated time have passed; says which."""
        end = self.now_ms + limit_ms
        while not done():
            if self.now_ms >= end:
                return False
            self.step()
        return True

    def step(self) -> None:
        self.now_ms += TICK_MS
        while self._queue and self._queue[0][0] <= self.now_ms:
            _, _, _, to, message = heapq.heappop(self._queue)
            if to not in self.crashed:
                self.post(to, self.nodes[to].receive(message, self.now_ms))
        for name, node in self.nodes.items():
            if name not in self.crashed:
                self.post(name, node.tick(self.now_ms))


def formed_group(size: int, config: Config, rng: random.Random) -> Network:
    names = [f"m{i:04d}" for i in range(size)]
    nodes = {name: Node.in_group(name, names, config, random.Random(rng.random())) for name in names}
    return Network(nodes, rng)


def _periods(ms: float | None, config: Config) -> float | None:
    return None if ms is None else ms / config.period_ms


def crash_one(size: int, loss: float, seed: int, config: Config) -> dict[str, Any]:
    rng = random.Random(seed)
    net = formed_group(size, config, rng)
    net.loss = loss
    settle_ms = 3 * config.period_ms
    while net.now_ms < settle_ms:
        net.step()
    victim = rng.choice(sorted(net.nodes))
    net.crashed.add(victim)
    crashed_at = net.now_ms
    live = [n for name, n in net.nodes.items() if name != victim]
    first_suspect = first_dead = all_dead = None
    limit_ms = crashed_at + config.suspicion_ms(size) + 60 * config.period_ms
    while all_dead is None and net.now_ms < limit_ms:
        net.step()
        states = [n.members[victim].state for n in live]
        if first_suspect is None and any(s != State.ALIVE for s in states):
            first_suspect = net.now_ms
        if first_dead is None and State.DEAD in states:
            first_dead = net.now_ms
        if all(s == State.DEAD for s in states):
            all_dead = net.now_ms
    declared = None if first_dead is None else first_dead - crashed_at
    return {
        "size": size,
        "loss": loss,
        "seed": seed,
        "detection_periods": _periods(None if first_suspect is None else first_suspect - crashed_at, config),
        "declared_periods": _periods(declared, config),
        "spread_periods": _periods(None if all_dead is None or first_dead is None else all_dead - first_dead, config),
        "messages_per_member_period": net.sent / size / (net.now_ms / config.period_ms),
    }


def false_positives(size: int, loss: float, seed: int, config: Config, periods: int = 100) -> dict[str, Any]:
    """Live members declared dead by anyone in `periods` periods with nothing crashed."""
    net = formed_group(size, config, random.Random(seed))
    net.loss = loss
    while net.now_ms < periods * config.period_ms:
        net.step()
    declared = {(c.member, c.incarnation) for n in net.nodes.values() for c in n.changes if c.after == State.DEAD}
    suspected = sum(1 for n in net.nodes.values() for c in n.changes if c.after == State.SUSPECT)
    return {
        "size": size,
        "loss": loss,
        "suspicion_mult": config.suspicion_mult,
        "seed": seed,
        "false_deaths_per_member_100_periods": len(declared) / size * 100 / periods,
        "suspicions_per_member_100_periods": suspected / size * 100 / periods,
    }


def log_fit(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Least squares of y = a + b log2(N); returns (a, b, r²)."""
    xs = [math.log2(n) for n, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, 1.0 - ss_res / ss_tot if ss_tot else 1.0


def run(seeds: int = 5, sizes: Iterable[int] = SIZES) -> dict[str, Any]:
    config = Config()
    crashes = [crash_one(n, 0.0, seed, config) for n in sizes for seed in range(1, seeds + 1)]
    lossy = [crash_one(100, loss, seed, config) for loss in LOSSES[1:] for seed in range(1, seeds + 1)]
    noisy = [
        false_positives(100, loss, seed, Config(suspicion_mult=mult))
        for loss in LOSSES
        for mult in SUSPICION_MULTS
        for seed in range(1, seeds + 1)
    ]
    return {"config": config.__dict__, "crashes": crashes, "lossy": lossy, "false_positives": noisy}


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.fmean(values) if values else math.nan


def table(result: dict[str, Any]) -> str:
    crashes = result["crashes"]
    lines = [
        "| members | detection (periods) | declared dead (periods) | spread to all (periods) | messages per member per period |",
        "|---|---|---|---|---|",
    ]
    points = []
    for size in sorted({r["size"] for r in crashes}):
        rows = [r for r in crashes if r["size"] == size]
        spread = _mean(rows, "spread_periods")
        points.append((size, spread))
        lines.append(
            f"| {size} | {_mean(rows, 'detection_periods'):.2f} | {_mean(rows, 'declared_periods'):.2f}"
            f" | {spread:.2f} | {_mean(rows, 'messages_per_member_period'):.2f} |"
        )
    a, b, r2 = log_fit(points)
    lines += ["", f"Spread fitted as {a:.2f} + {b:.2f} log2(N) periods, r² = {r2:.3f}.", ""]
    lines += ["| loss (100 members) | detection | declared dead | spread to all |", "|---|---|---|---|"]
    for loss in sorted({r["loss"] for r in result["lossy"]}):
        rows = [r for r in result["lossy"] if r["loss"] == loss]
        lines.append(
            f"| {loss:.0%} | {_mean(rows, 'detection_periods'):.2f} | {_mean(rows, 'declared_periods'):.2f}"
            f" | {_mean(rows, 'spread_periods'):.2f} |"
        )
    lines += [
        "",
        "| loss (100 members, nothing crashed) | suspicion timeout | suspicions per member per 100 periods"
        " | live members declared dead per member per 100 periods |",
        "|---|---|---|---|",
    ]
    noisy = result["false_positives"]
    for loss in sorted({r["loss"] for r in noisy}):
        for mult in sorted({r["suspicion_mult"] for r in noisy}):
            rows = [r for r in noisy if (r["loss"], r["suspicion_mult"]) == (loss, mult)]
            timeout = Config(suspicion_mult=mult).suspicion_ms(100) / Config().period_ms
            lines.append(
                f"| {loss:.0%} | {timeout:.0f} periods | {_mean(rows, 'suspicions_per_member_100_periods'):.2f}"
                f" | {_mean(rows, 'false_deaths_per_member_100_periods'):.3f} |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crashes = result["crashes"]
    sizes = sorted({r["size"] for r in crashes})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("detection_periods", "first suspicion"), ("spread_periods", "spread of the death")):
        ax.plot(sizes, [_mean([r for r in crashes if r["size"] == n], key) for n in sizes], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("members")
    ax.set_ylabel("protocol periods")
    ax.set_title("SWIM, one crash, no loss (bench/gossip.py)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gossip", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs per setting (seeds 1..N)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="group sizes, comma-separated")
    parser.add_argument("--plot", metavar="PNG", help="also draw detection and spread against the group's size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas, got {args.sizes!r}")
    if args.seeds < 1 or any(n < 3 for n in sizes):
        parser.error("--seeds must be at least 1 and every size at least 3")
    result = run(args.seeds, sizes)
    print(json.dumps(result) if args.json else table(result))
    if args.plot:
        plot(result, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
