"""coop-hf: prompt learning for contrastive vision-language models (CoOp and its successors on CLIP, MetaCLIP 2,
SigLIP, SigLIP 2 and open_clip checkpoints), native to transformers, datasets and the Hub.

`import coop_hf` imports nothing heavy, as `import transformers`: each name is imported where it is first used
(transformers' `_LazyModule`), so `from coop_hf import CoOpModel` imports CoOp's folder and none of the others. Every
method folder's public names (the `__all__` of its `__init__.py`: `CoOpModel`, `CoOpConfig`, ...) are exported here
by themselves: adding a method folder adds them.
"""

import ast
import sys
from pathlib import Path

from transformers.utils.import_utils import _LazyModule

__version__ = "0.1.0"


def _exports(module_file: Path) -> list[str]:
    """The `__all__` of a module, read without importing it (parsed: transformers' `fetch__all__` misreads a list
    followed by a comment)."""
    for node in ast.parse(module_file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "__all__" for target in node.targets):
            return ast.literal_eval(node.value)
    return []


_methods = Path(__file__).parent / "methods"
_import_structure = {
    "backbones": ["BACKBONES", "Backbone", "backbone_for", "load_backbone"],
    "configuration_utils": ["PromptConfig"],
    "methods": _exports(_methods / "__init__.py"),  # the registry: METHODS, load_methods, register_method, ...
    "modeling_utils": ["PromptModelOutput", "PromptPreTrainedModel", "TextFeatureClassifier"],
}
for _init in sorted(_methods.glob("*/__init__.py")):
    _import_structure[f"methods.{_init.parent.name}"] = _exports(_init)

sys.modules[__name__] = _LazyModule(
    __name__, __file__, _import_structure, module_spec=__spec__, extra_objects={"__version__": __version__}
)
