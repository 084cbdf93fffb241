"""Methods register themselves from their folders: models for the Auto classes and loaders, names for `--method`."""

import json
import subprocess
import sys
import threading

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoModel

from coop_hf import PROMPT_MODELS, CoOpModel, ProGradModel
from coop_hf.methods import Recipe, registry
from coop_hf.methods.coop.configuration_coop import CoOpConfig
from coop_hf.methods.prograd.trainer import ProGradTrainer
from coop_hf.modeling_utils import PromptModelOutput
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.prompt_learning import PromptLearning
from coop_hf.training import CoOpTrainer
from tests.conftest import random_clip, tiny_clip_config


@strict
class BiasedCoOpConfig(CoOpConfig):
    r"""The README's "Adding a method" example.

    Args:
        bias_init (`float`, defaults to 0.0):
            Initial value of the learned class biases.
    """

    model_type = "test-biased-coop"
    bias_init: float = 0.0


class BiasedCoOpModel(CoOpModel):
    config_class = BiasedCoOpConfig
    method_name = "Biased CoOp"

    def __init__(self, config, clip, tokenizer, image_processor=None):
        super().__init__(config, clip, tokenizer, image_processor)
        self.class_bias = nn.Parameter(torch.full((len(config.classnames),), config.bias_init))

    def forward(self, pixel_values=None, labels=None, image_embeds=None, return_dict=None):
        image_embeds = F.normalize(self.image_features(pixel_values, image_embeds), dim=-1)
        text_embeds = F.normalize(self.get_text_features(), dim=-1)
        logits = self.backbone.logits(image_embeds, text_embeds) + self.class_bias
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        output = PromptModelOutput(loss=loss, logits=logits, image_embeds=image_embeds, text_embeds=text_embeds)
        return output if return_dict is not False else output.to_tuple()


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(tiny_clip_config())


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry, whose registrations are undone after the test."""
    registry.load_methods()
    monkeypatch.setattr(registry.METHODS, "registered", dict(registry.METHODS.registered))
    monkeypatch.setattr(registry.PROMPT_MODELS, "registered", dict(registry.PROMPT_MODELS.registered))
    return registry


def test_every_method_folder_registered_its_names_and_models():
    assert list(PROMPT_METHODS) == list(registry.METHODS)
    assert {"coop", "cocoop", "kgcoop", "prograd", "full-prompt", "cls-tuning", "classifier-r", "classifier-c"} <= set(
        PROMPT_METHODS
    )
    for method in PROMPT_METHODS.values():
        assert PROMPT_MODELS[method.model_class.config_class.model_type] is method.model_class
    assert PROMPT_METHODS["prograd"].trainer_class is ProGradTrainer  # named by "module:Class", imported when run
    assert PROMPT_METHODS["coop"].trainer_class is CoOpTrainer
    assert PROMPT_MODELS["prograd"] is ProGradModel and "coop-ensemble" in PROMPT_MODELS


def test_a_registered_method_saves_loads_and_runs(clean_registry, tiny_clip, clip_tokenizer, tmp_path):
    recipes = {"few_shot": Recipe(training={"num_train_epochs": 50})}
    spec = clean_registry.register_method("test-biased-coop", BiasedCoOpModel, recipes=recipes)
    assert clean_registry.METHODS["test-biased-coop"] is spec
    method = PromptLearning.from_spec(spec)
    assert method.recipe().training == {"num_train_epochs": 50} and method.trainer_class is CoOpTrainer
    assert method.recipe("cross_dataset") is recipes["few_shot"]  # a protocol left out: few-shot's
    model = BiasedCoOpModel.from_clip(tiny_clip, ["daisy", "rose"], tokenizer=clip_tokenizer, n_ctx=2, bias_init=0.5)
    assert sorted(model.prompt_state_dict()) == ["class_bias", "prompt_learner.ctx"]
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, clip_model=tiny_clip, tokenizer=clip_tokenizer)
    assert type(loaded) is BiasedCoOpModel and torch.equal(loaded.class_bias, model.class_bias)
    features = torch.randn(3, tiny_clip.config.projection_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image_embeds=features).logits, model(image_embeds=features).logits)


def test_a_name_or_model_type_registers_once(clean_registry):
    with pytest.raises(ValueError, match="--method 'coop' is registered twice"):
        clean_registry.register_method("coop", CoOpModel)

    class Impostor(CoOpModel):
        pass

    with pytest.raises(ValueError, match="model_type 'coop' is registered twice: CoOpModel and Impostor"):
        clean_registry.register_model(Impostor)


def test_fitted_is_declared_as_the_trainer_fits():
    """`MethodSpec.fitted` is a declaration (no class probing at run time); it must agree with the trainer."""
    from coop_hf.feature_fit import FeatureFitTrainer
    from coop_hf.methods import METHODS

    for spec in METHODS.values():
        assert spec.fitted == issubclass(spec.trainer_class, FeatureFitTrainer), spec.name
    assert {name for name, spec in METHODS.items() if spec.fitted} == {
        "tip-adapter",
        "tip-adapter-f",
        "lp++",
        "clap",
        "zs-lp",
    }


LAZY_IMPORTS = """
import importlib, json, sys, threading, time

def folders_imported():
    from coop_hf.methods.registry import method_folders

    imported = {name.split(".")[2] for name in sys.modules if name.startswith("coop_hf.methods.")}
    return sorted(set(method_folders()) & imported)

def known(model_type):
    from transformers import AutoConfig

    try:
        AutoConfig.for_model(model_type)
        return True
    except ValueError:
        return False

import coop_hf
seen = {"bare": [sorted(name for name in sys.modules if name.startswith("coop_hf.")), "torch" in sys.modules,
                 all(name.isidentifier() for name in coop_hf.__all__), hasattr(coop_hf, "CLIPTokenizer")]}

from coop_hf import CoOpModel
seen["coop"] = [folders_imported(), known("coop"), known("kgcoop")]

from coop_hf import TipAdapterModel  # a folder listed late, imported before the others

seen["submodule"] = coop_hf.data.__name__

from coop_hf import METHODS, load_methods

import_module = importlib.import_module

def import_reading_the_registry(name, package=None):
    len(METHODS)  # as a folder would that reads the registry when imported
    return import_module(name, package)

importlib.import_module = import_reading_the_registry
try:
    load_methods()
except RuntimeError as error:
    seen["read_while_importing"] = str(error)
importlib.import_module = import_module

sys.modules["coop_hf.methods.maple"] = None  # a folder that fails to import
failures = 0
for attempt in range(2):
    try:
        len(coop_hf.METHODS)
    except ImportError:
        failures += 1
del sys.modules["coop_hf.methods.maple"]
seen["failed"] = failures

def slow_import(name, package=None):
    time.sleep(0.05)
    return import_module(name, package)

importlib.import_module = slow_import
loader = threading.Thread(target=coop_hf.load_methods)
loader.start()
time.sleep(0.2)
seen["read_while_another_thread_loads"] = len(coop_hf.METHODS)
loader.join()
importlib.import_module = import_module

seen["all"] = [folders_imported(), known("maple"), list(coop_hf.METHODS), list(coop_hf.PROMPT_MODELS),
               list(coop_hf.load_methods())]
exported = {}
for folder in coop_hf.load_methods():
    module = importlib.import_module(f"coop_hf.methods.{folder}")
    exported[folder] = all(getattr(coop_hf, name) is getattr(module, name) for name in module.__all__) and set(
        module.__all__) <= set(coop_hf.__all__)
seen["exported"] = exported
print(json.dumps(seen))
"""


def test_import_coop_hf_is_lazy_and_a_class_loads_its_folder_alone():
    """`import coop_hf` imports no method folder and not torch, and exports names only; `from coop_hf import
    CoOpModel` imports CoOp's folder alone and registers it with the Auto classes; reading `METHODS` imports every
    folder (a failed import fails every read until mended; a read while they import is refused; another thread's read
    waits for the whole list), in the
    same order whichever folders came first, and every folder's `__all__` (parsed, not imported) is exported whole."""
    result = subprocess.run([sys.executable, "-c", LAZY_IMPORTS], capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout)
    assert seen["bare"] == [[], False, True, False]
    assert seen["coop"] == [["coop"], True, False]
    assert seen["submodule"] == "coop_hf.data"
    assert seen["read_while_importing"].startswith("a method folder read METHODS or PROMPT_MODELS while")
    assert seen["failed"] == 2
    assert seen["read_while_another_thread_loads"] == len(registry.METHODS)
    folders = registry.method_folders()
    assert len(folders) == 17
    in_this_process = [list(registry.METHODS), list(registry.PROMPT_MODELS), list(registry.load_methods())]
    assert seen["all"] == [folders, True, *in_this_process]
    assert in_this_process[0][:2] == ["coop", "cocoop"] and in_this_process[2][-1] == "upl"
    assert seen["exported"] == dict.fromkeys(folders, True)


def test_methods_are_listed_by_their_folders_rank_whatever_was_registered_first(clean_registry):
    """Folders of equal `ORDER` list by name; a class defined outside the method folders lists last."""

    def model_in(module: str) -> type:
        config_class = type("Config", (BiasedCoOpConfig,), {"model_type": f"test-{module}", "__module__": module})
        return type("Model", (BiasedCoOpModel,), {"config_class": config_class, "__module__": module})

    for name, module in [
        ("outside", __name__),
        ("zzz", "coop_hf.methods.zzz.modeling_zzz"),
        ("aaa", "coop_hf.methods.aaa"),
    ]:
        clean_registry.register_method(name, model_in(module))
    assert list(clean_registry.METHODS)[-3:] == ["aaa", "zzz", "outside"]
    assert list(clean_registry.METHODS)[:2] == ["coop", "cocoop"]


def test_a_folder_imported_again_registers_its_classes_again(clean_registry):
    """A folder whose first import failed after it registered defines its classes anew when imported again: they
    replace the old ones (the same class registered twice is still an error)."""

    def define() -> type:
        class Reloaded(BiasedCoOpModel):
            pass

        return Reloaded

    first, again = define(), define()
    clean_registry.register_method("reloaded", first)
    clean_registry.register_method("reloaded", again)
    assert clean_registry.METHODS["reloaded"].model_class is again
    assert clean_registry.PROMPT_MODELS[BiasedCoOpConfig.model_type] is again
    with pytest.raises(ValueError, match="--method 'reloaded' is registered twice"):
        clean_registry.register_method("reloaded", again)


def test_two_threads_registering_at_once_lose_nothing():
    """Two threads importing two folders register at once."""
    names = registry.Registry(lambda entry: object)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=lambda prefix=prefix: [names.add(f"{prefix}{i}", i) for i in range(300)])
            for prefix in "ab"
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    assert len(names.registered) == 600


def test_exports_are_read_from_the_source():
    from coop_hf import _exports

    assert _exports("x = 1\n__all__ = ['A', 'b']  # exported\n") == ["A", "b"]
    assert _exports("__all__: list[str] = [\n    'A',  # a comment\n]\n") == ["A"]
    assert _exports("import os\n") == []
