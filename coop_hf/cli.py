"""How the example scripts end: a user error is one line and exit status 2, Ctrl-C one line saying how to resume,
a real fault its traceback.

```python
if __name__ == "__main__":
    run_command(main)  # main(argv: list[str] | None) parses the flags and runs
```
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

TRACEBACK_VARIABLE = "COOP_HF_TRACEBACK"
"""Set it (to anything) to get the traceback of a user error too."""
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130
RESUME_HINT = (
    "rerun the same command with --resume_from_checkpoint true to continue: finished seeds and cells are kept and "
    "an interrupted seed resumes from its last checkpoint"
)


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """' Did you mean "<the closest of names>"?', to end an error message with; "" when none is close."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The errors that mean "change a flag or a file": bad values (ValueError, with the flag named), missing files,
    unreadable images, an unreachable Hub."""
    from .data.images import UnreadableImageError
    from .hub_access import HubUnavailableError

    return ValueError, FileNotFoundError, UnreadableImageError, HubUnavailableError


def is_main_process() -> bool:
    """The first process of a (possibly multi-process) launch: it alone prints a user error."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def run_command(
    main: Callable[[list[str] | None], Any], argv: list[str] | None = None, *, resumable: bool = True
) -> Any:
    """Run a script's `main(argv)`; a user error prints `error: <message>` once and exits with status 2, Ctrl-C
    prints how to resume (for a `resumable` script) and exits with 130. Other exceptions keep their traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        if is_main_process():
            print(f"\ninterrupted: {RESUME_HINT}." if resumable else "\ninterrupted.", file=sys.stderr)
        raise SystemExit(INTERRUPTED_STATUS) from None
    except Exception as error:
        if not isinstance(error, user_error_types()) or os.environ.get(TRACEBACK_VARIABLE):
            raise
        if is_main_process():
            print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from None
