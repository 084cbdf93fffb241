"""coop-hf: prompt learning for contrastive vision-language models (CoOp and its successors on CLIP, MetaCLIP 2,
SigLIP, SigLIP 2 and open_clip checkpoints), native to transformers, datasets and the Hub.

`import coop_hf` imports nothing heavy, as `import transformers`: each name is imported where it is first used, so
`from coop_hf import CoOpModel` imports CoOp's folder and none of the others. Every method folder's public names (the
`__all__` of its `__init__.py`: `CoOpModel`, `CoOpConfig`, ...) are exported here by themselves: adding a method
folder adds them.
"""

import ast as _ast
import importlib as _importlib
import importlib.util as _importlib_util
from importlib.resources import files as _files

__version__ = "0.1.0"


def _exports(source: str) -> list[str]:
    """The `__all__` of a module, read from its source without importing it."""
    for node in _ast.parse(source).body:
        targets = node.targets if isinstance(node, _ast.Assign) else [getattr(node, "target", None)]
        if any(getattr(target, "id", None) == "__all__" for target in targets):
            return _ast.literal_eval(node.value)
    return []


def _method_folders() -> list:
    """The method folders (`methods/<name>/` holding an `__init__.py`), by name, found without importing them (as
    importlib.resources entries, so also inside a zip)."""
    entries = (_files(__name__) / "methods").iterdir()
    folders = [entry for entry in entries if entry.name.isidentifier() and (entry / "__init__.py").is_file()]
    return sorted(folders, key=lambda entry: entry.name)


def _export_table() -> dict[str, str]:
    """Each exported name -> the submodule that defines it: the core names, then every method folder's."""
    methods = _files(__name__) / "methods"
    table = {
        **dict.fromkeys(["BACKBONES", "Backbone", "backbone_for", "load_backbone"], "backbones"),
        **dict.fromkeys(["PromptConfig"], "configuration_utils"),
        # the registry: METHODS, load_methods, register_method, ...
        **dict.fromkeys(_exports((methods / "__init__.py").read_text(encoding="utf-8")), "methods"),
        **dict.fromkeys(["PromptModelOutput", "PromptPreTrainedModel", "TextFeatureClassifier"], "modeling_utils"),
    }
    for folder in _method_folders():
        source = (folder / "__init__.py").read_text(encoding="utf-8")
        table.update(dict.fromkeys(_exports(source), f"methods.{folder.name}"))
    return table


_SUBMODULE_OF = _export_table()
__all__ = list(_SUBMODULE_OF)


def __getattr__(name: str):
    # PEP 562, as transformers' _LazyModule (private to transformers, where it also answers for transformers'
    # tokenizer names and hides import errors behind a generic message)
    if name in _SUBMODULE_OF:
        value = getattr(_importlib.import_module(f".{_SUBMODULE_OF[name]}", __name__), name)
        globals()[name] = value  # later lookups find it without this function
        return value
    if name.isidentifier() and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f".{name}", __name__)  # a subpackage or module: coop_hf.data, ...
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
