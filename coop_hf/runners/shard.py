"""`--shard I/N`: one of N disjoint, deterministic parts of a study's grid, so that N workers sharing the output
directory (a SLURM job array, machines on one file system) run a study together. Each part resumes like a whole
run; the same command without `--shard` afterwards skips what the parts finished and writes the tables and plots."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

Unit = TypeVar("Unit")

SHARD_HELP = (
    "Run only the I-th of N disjoint parts of the grid (I/N, e.g. 2/4), for N workers sharing --output_dir (a SLURM "
    "array: --shard $((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT). Then run the same command without "
    "--shard: it skips the finished parts and writes the tables and plots."
)


@dataclass
class ShardArguments:
    """The `--shard` flag of the studies (sweep, base-to-new, transfer, noise study)."""

    shard: str | None = field(default=None, metadata={"help": SHARD_HELP})


@dataclass(frozen=True)
class Shard:
    """Part `index` (from 1) of `count`: the units at positions index-1, index-1+count, ... of a study's grid, in
    the grid's order (a round robin, so that every part gets a share of each dataset and method)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str | None, *, overwrite: bool = False) -> Shard | None:
        """The shard `--shard` names ("I/N"), or None without the flag."""
        if text is None:
            return None
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
            raise ValueError(f"--shard takes I/N with 1 <= I <= N (e.g. --shard 1/4), got {text!r}.")
        if overwrite:
            raise ValueError(
                "--overwrite_output_dir would let each shard remove the others' results: delete the output directory "
                "before starting the shards instead, and drop --overwrite_output_dir."
            )
        return cls(int(match.group(1)), int(match.group(2)))

    def select(self, units: Sequence[Unit]) -> list[Unit]:
        """This part's units of the grid."""
        return list(units[self.index - 1 :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def finished_message(self, done: int, total: int, what: str, *, resume_flag: bool = True) -> str:
        """What a shard says when it is done: its share, and the command that completes the study."""
        command = "the same command without --shard"
        command += " and with --resume_from_checkpoint true" if resume_flag else ""
        return (
            f"shard {self}: {done} of the study's {total} {what} done. When every shard is done, run {command}: it "
            "reuses the finished work and writes the tables and plots."
        )
