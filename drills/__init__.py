"""Fault drills: clients book rides while a nemesis breaks something; afterwards the
correctness properties (docs/properties.md) are checked over the client history, the
databases, the psp's own records and the topics, and a verdict and a report are written
(see docs/drills.md)."""

from __future__ import annotations

from typing import Any

Verdict = dict[str, Any]
