"""Class-name fixes the CoOp reference applies before class names reach a prompt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClassnameFixes:
    """A dataset's class-name fixes: raw-name renames, classes left out, then underscores to spaces."""

    rename: Mapping[str, str] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()

    def apply(self, raw: str) -> str:
        """Return the readable name of raw class name ``raw``."""
        return self.rename.get(raw, raw).replace("_", " ")


NO_FIXES = ClassnameFixes()
"""Only the universal underscore-to-space fix."""
