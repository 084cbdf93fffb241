"""Fail fast, with the flag to change, when a Hub id cannot be loaded: offline, or with the Hub unreachable.

Without this, `from_pretrained` / `load_dataset` retry for about 30 s and end in a long trace that names no flag.
"""

from __future__ import annotations

import functools
import os

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

PROBE_TIMEOUT_S = 3.0
OPEN_CLIP_NAMES = ("open_clip:", "hf-hub:", "local-dir:")


class HubUnavailableError(OSError):
    """A Hub id was asked for while the Hub cannot be reached and the local cache does not hold it."""


def is_local(name_or_path: str) -> bool:
    return os.path.exists(os.path.expanduser(str(name_or_path)))


def is_offline() -> bool:
    """True under `HF_HUB_OFFLINE=1` (read at call time, so tests and scripts may set it late)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.upper() in constants.ENV_VARS_TRUE_VALUES


@functools.cache
def hub_is_reachable() -> bool:
    """One quick request to the Hub endpoint (no retries); False when offline or when it fails."""
    if is_offline():
        return False
    try:
        huggingface_hub.get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception:  # any connection, DNS, TLS or timeout failure means the same: not reachable now
        return False
    return True


def why_unreachable() -> str:
    return "the Hub is offline (HF_HUB_OFFLINE=1)" if is_offline() else f"{constants.ENDPOINT} cannot be reached"


NOT_A_MODEL = (
    "{flag} {value!r} is neither a folder nor a Hub id (owner/name): give a checkpoint folder (written by "
    "save_pretrained) or a Hub id such as openai/clip-vit-base-patch32."
)
NOT_A_PROMPT = (
    "{flag} {value!r} is neither a folder nor a Hub id (owner/name): give a saved prompt's folder (written by "
    "save_pretrained, e.g. runs/coop/seed1) or its Hub id."
)


def model_load_kwargs(
    name_or_path: str, *, flag: str = "--model_name_or_path", not_found: str = NOT_A_MODEL
) -> dict[str, bool]:
    """`from_pretrained` keyword arguments for a model id or path: `{}` when it can load normally,
    `{"local_files_only": True}` when the Hub is unreachable but the cache holds it; otherwise raise a
    `HubUnavailableError` that names `flag` and what to pass (a `ValueError` with `not_found` for a value that is
    neither a folder nor a Hub id)."""
    if is_local(name_or_path) or str(name_or_path).startswith(OPEN_CLIP_NAMES):
        return {}  # open_clip's names load through open_clip (`coop_hf.backbones.openclip`), which reports its errors
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        raise ValueError(not_found.format(flag=flag, value=str(name_or_path))) from None
    if hub_is_reachable():
        return {}
    cached = huggingface_hub.try_to_load_from_cache(str(name_or_path), constants.CONFIG_NAME)
    if isinstance(cached, str):
        return {"local_files_only": True}
    raise HubUnavailableError(
        f"{flag} {name_or_path!r} is not a local folder nor in the Hugging Face cache, and {why_unreachable()}. "
        f"Pass {flag} a local checkpoint folder (e.g. one written by the model's save_pretrained or "
        f"`hf download {name_or_path} --local-dir <folder>` on a connected machine), or run where the Hub is "
        "reachable."
    )
