"""The transfer protocols end to end with a tiny random CLIP: a saved prompt evaluated on another dataset,
base-to-new on the real mini Caltech101, and domain generalisation / cross-dataset transfer on fake ImageNet-family
layouts built from real JPEGs."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from coop_hf import CoOpEnsemble, CoOpModel
from coop_hf.data import load_benchmark
from coop_hf.hub_access import HubUnavailableError
from coop_hf.runners import LoadedBackbone
from coop_hf.runners.base_to_new import base_to_new_rows, base_to_new_table, harmonic_mean
from coop_hf.runners.methods import PROMPT_METHODS
from coop_hf.runners.transfer import transfer_table
from tests.conftest import DATA, load_example

WNIDS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01491361": "tiger shark",
    "n01494475": "hammerhead shark",
    "n01496331": "electric ray",
}
IMAGENET_A = ("n01443537", "n01491361", "n01496331")
IMAGENET_R = ("n01440764", "n01484850", "n01491361", "n01494475")


def common(tiny_clip_dir, output_dir, data_dir=DATA) -> list[str]:
    return [
        "--model_name_or_path", str(tiny_clip_dir), "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--disable_tqdm", "true", "--report_to", "none", "--learning_rate", "0.05",
    ]  # fmt: skip


def accuracy_of(prompt_dir, backbone: LoadedBackbone, features: dict, classnames: list[str]) -> float:
    """Independent check: the saved prompt moved to `classnames`, on test features."""
    model = CoOpModel.from_pretrained(prompt_dir, clip_model=backbone.clip, tokenizer=backbone.tokenizer)
    model.set_classnames(classnames)
    with torch.no_grad():
        predictions = model(image_embeds=features["image_embeds"]).logits.argmax(-1)
    return 100.0 * int((predictions == features["labels"]).sum()) / len(predictions)


@pytest.fixture(scope="module")
def flowers_prompt(tiny_clip_dir, tmp_path_factory):
    """A unified-context CoOp prompt trained one step on the mini Flowers102 with examples/train.py."""
    output_dir = tmp_path_factory.mktemp("flowers")
    flags = ["--dataset", "oxford_flowers", "--shots", "1", "--n_ctx", "4", "--max_steps", "1"]
    results = load_example("train").main([*common(tiny_clip_dir, output_dir), *flags])
    return output_dir / "seed1", results


def test_harmonic_mean_and_average_row_reproduce_cocoop_table_1():
    # CoCoOp's published averages over 11 datasets (Base, New) -> H.
    for base, new, expected in ((69.34, 74.22, 71.70), (82.69, 63.22, 71.66), (80.47, 71.69, 75.83)):
        assert round(harmonic_mean(base, new), 2) == expected
    assert harmonic_mean(0.0, 0.0) == 0.0
    records = [
        {"dataset": "caltech101", "base_accuracy": 90.0, "new_accuracy": 10.0, "zeroshot_base_accuracy": 50.0,
         "zeroshot_new_accuracy": 50.0, "model_name_or_path": "clip", "shots": 16, "seeds": [1, 2, 3]},
        {"dataset": "oxford_flowers", "base_accuracy": 10.0, "new_accuracy": 90.0, "zeroshot_base_accuracy": 40.0,
         "zeroshot_new_accuracy": 60.0, "model_name_or_path": "clip", "shots": 16, "seeds": [1, 2, 3]},
    ]  # fmt: skip
    (average, row), *per_dataset = base_to_new_rows(records)
    # H of the averaged Base and New (50, 50) is 50; the mean of the per-dataset H would be 18.
    assert average == "Average over 2 datasets" and row["method"] == (50.0, 50.0, 50.0)
    assert row["zeroshot"] == (45.0, 55.0, pytest.approx(49.5))
    assert [name for name, _ in per_dataset] == ["Caltech101", "Flowers102"]
    assert per_dataset[0][1]["method"] == (90.0, 10.0, pytest.approx(18.0))
    table = base_to_new_table(records, "CoOp")
    assert "| Average over 2 datasets | Zero-shot CLIP | 45.00 | 55.00 | 49.50 |" in table
    assert "|  | CoOp | 90.00 | 10.00 | 18.00 |" in table and "seeds 1, 2, 3" in table


@pytest.mark.slow
def test_evaluate_a_saved_prompt_on_its_dataset_and_moved_to_another(flowers_prompt, tiny_clip_dir, tmp_path):
    prompt_dir, trained = flowers_prompt
    evaluate = load_example("evaluate_prompt").main
    own = evaluate(["--prompt", str(prompt_dir), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
                    "--output_dir", str(tmp_path / "own")])  # fmt: skip
    assert own["accuracy"] == pytest.approx(trained["per_seed"][0]["accuracy"], abs=1e-9)
    assert own["classnames_moved"] is False and own["model_name_or_path"] == str(tiny_clip_dir)
    assert own["prompt"] == {
        "name_or_path": str(prompt_dir), "model_type": "coop", "method": "CoOp", "num_classes": 102,
        "base_model_name_or_path": str(tiny_clip_dir),
    }  # fmt: skip
    assert own["dataset"]["num_test_images"] == 1020 and len(own["dataset"]["splits_fingerprint"]) == 16
    assert json.loads((tmp_path / "own" / "results.json").read_text()) == own

    moved = evaluate(["--prompt", str(prompt_dir), "--dataset", "caltech101", "--data_dir", str(DATA), "--output_dir",
                      str(tmp_path / "moved"), "--model_name_or_path", str(tiny_clip_dir)])  # fmt: skip
    assert moved["classnames_moved"] is True and moved["prompt"]["num_classes"] == 102
    assert moved["dataset"] | {"splits_fingerprint": None} == {
        "name": "caltech101", "data_dir": str(DATA), "num_classes": 100, "num_test_images": 999,
        "splits_fingerprint": None,
    }  # fmt: skip
    test = load_benchmark("caltech101", DATA)["test"]
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    expected = accuracy_of(prompt_dir, backbone, backbone.features(test, batch_size=100), test.features["label"].names)
    assert moved["accuracy"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.slow
def test_evaluate_an_ensemble_of_saved_prompts(flowers_prompt, tiny_clip_dir, tmp_path):
    prompt_dir, trained = flowers_prompt
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    members = [CoOpModel.from_pretrained(prompt_dir, clip_model=backbone.clip) for _ in range(2)]
    CoOpEnsemble(members).save_pretrained(tmp_path / "ensemble")
    results = load_example("evaluate_prompt").main(
        ["--prompt", str(tmp_path / "ensemble"), "--dataset", "oxford_flowers", "--data_dir", str(DATA),
         "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert results["prompt"]["model_type"] == "coop-ensemble" and results["prompt"]["num_classes"] == 102
    # Two copies of one prompt: the mean of identical logits, so the prompt's own accuracy.
    assert results["accuracy"] == pytest.approx(trained["per_seed"][0]["accuracy"], abs=1e-9)


def test_class_specific_prompt_is_refused_on_another_class_list(tiny_clip_dir, tmp_path):
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    names = load_benchmark("oxford_flowers", DATA)["test"].features["label"].names
    model = CoOpModel.from_clip(
        backbone.clip, names, tokenizer=backbone.tokenizer, n_ctx=4, class_specific_context=True
    )
    model.save_pretrained(tmp_path / "csc")
    evaluate = load_example("evaluate_prompt").main
    flags = ["--prompt", str(tmp_path / "csc"), "--data_dir", str(DATA), "--model_name_or_path", str(tiny_clip_dir)]
    with pytest.raises(ValueError, match=r"102 training classes, --class_specific_context true.*here 100 classes"):
        evaluate([*flags, "--dataset", "caltech101", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before any work
    with pytest.raises(ValueError, match=r"--prompt .* holds a model of type 'clip', not a prompt model"):
        evaluate(["--prompt", str(tiny_clip_dir), "--dataset", "caltech101", "--data_dir", str(DATA),
                  "--output_dir", str(tmp_path / "clip")])  # fmt: skip
    with pytest.raises(HubUnavailableError, match=r"--prompt 'org/not-saved-here' is not a local folder"):
        evaluate(["--prompt", "org/not-saved-here", "--dataset", "caltech101", "--output_dir", str(tmp_path / "hub")])


@pytest.mark.slow
def test_base_to_new_end_to_end_and_resumed(tiny_clip_dir, tmp_path, capsys):
    base_to_new = load_example("base_to_new").main
    flags = [*common(tiny_clip_dir, tmp_path), "--dataset", "caltech101", "--shots", "2", "--num_train_epochs", "1"]
    (record,) = base_to_new(flags)
    assert json.loads((tmp_path / "caltech101" / "results.json").read_text()) == json.loads(json.dumps(record))
    names = load_benchmark("caltech101", DATA)["test"].features["label"].names
    assert record["protocol"] == "base-to-new" and record["shots"] == 2 and record["seeds"] == [1]
    assert record["base_classes"] == names[:50] and record["new_classes"] == names[50:]
    assert record["num_test_images"] == {"base": 500, "new": 499}
    assert record["ctx_init"] == "a photo of a" and record["n_ctx"] == 4  # the reference's base-to-new CoOp prompt
    (seed,) = record["per_seed"]
    assert seed["harmonic_mean"] == pytest.approx(
        2 * seed["base_accuracy"] * seed["new_accuracy"] / (seed["base_accuracy"] + seed["new_accuracy"])
    )
    assert record["harmonic_mean"] == pytest.approx(harmonic_mean(record["base_accuracy"], record["new_accuracy"]))
    assert record["zeroshot_harmonic_mean"] == pytest.approx(
        harmonic_mean(record["zeroshot_base_accuracy"], record["zeroshot_new_accuracy"])
    )
    # New: the base-class prompt moved to the 50 new class names, on the new classes' test images only.
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    test = backbone.features(load_benchmark("caltech101", DATA)["test"], batch_size=100)
    new = test["labels"] >= 50
    new_test = {"image_embeds": test["image_embeds"][new], "labels": test["labels"][new] - 50}
    assert seed["new_accuracy"] == pytest.approx(
        accuracy_of(tmp_path / "caltech101" / "seed1", backbone, new_test, names[50:]), abs=1e-9
    )
    assert CoOpModel.from_pretrained(tmp_path / "caltech101" / "seed1").config.classnames == names[:50]
    table = (tmp_path / "results.md").read_text()
    assert f"| Caltech101 | Zero-shot CLIP | {record['zeroshot_base_accuracy']:.2f} |" in table
    assert f"|  | CoOp | {record['base_accuracy']:.2f} | {record['new_accuracy']:.2f} |" in table
    assert (tmp_path / "base_to_new.png").read_bytes()[:4] == b"\x89PNG"

    capsys.readouterr()
    (resumed,) = base_to_new([*flags, "--resume_from_checkpoint", "true"])
    assert "seed 1 (1/1): already done" in capsys.readouterr().out
    assert resumed == record


def build_fake_imagenet_family(root: Path) -> None:
    """ImageNet, -V2, -Sketch, -A and -R in the CoOp layout, 6 classes (A: 3, R: 4), real JPEGs from Caltech101."""
    sources = sorted(path for path in (DATA / "caltech-101" / "101_ObjectCategories").iterdir() if path.is_dir())
    images = {wnid: sorted(folder.glob("*.jpg")) for wnid, folder in zip(WNIDS, sources, strict=False)}

    def put(folder: Path, files: list[Path]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copy(file, folder / file.name)

    names = "".join(f"{wnid} {name}\n" for wnid, name in WNIDS.items())
    for folder in ("imagenet", "imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"):
        (root / folder).mkdir(parents=True)
        (root / folder / "classnames.txt").write_text(names)
    for index, (wnid, files) in enumerate(images.items()):
        put(root / "imagenet" / "images" / "train" / wnid, files[:3])
        put(root / "imagenet" / "images" / "val" / wnid, files[3:5])
        put(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(index), files[5:6])
        put(root / "imagenet-sketch" / "images" / wnid, files[6:7])
    for wnid in IMAGENET_A:
        put(root / "imagenet-adversarial" / "imagenet-a" / wnid, images[wnid][7:9])
    (root / "imagenet-adversarial" / "imagenet-a" / "README.txt").write_text("not a class")
    for wnid in IMAGENET_R:
        put(root / "imagenet-rendition" / "imagenet-r" / wnid, images[wnid][9:10])


@pytest.mark.slow
def test_domain_generalisation_then_cross_dataset_on_fake_imagenet_layouts(tiny_clip_dir, tmp_path, capsys):
    data = tmp_path / "data"
    build_fake_imagenet_family(data)
    (data / "caltech-101").symlink_to(DATA / "caltech-101")
    transfer = load_example("transfer").main
    flags = [*common(tiny_clip_dir, tmp_path / "out", data), "--source", "imagenet", "--shots", "1"]
    flags += ["--num_train_epochs", "2", "--n_ctx", "4", "--seeds", "1", "2"]
    record = transfer(flags)  # default targets: the four ImageNet variants
    assert record["protocol"] == "domain generalisation" and "average" not in record
    assert record["source"]["dataset"] == "imagenet" and record["source"]["num_test_images"] == 12
    targets = {target["dataset"]: target for target in record["targets"]}
    assert list(targets) == ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    assert [(targets[name]["num_classes"], targets[name]["num_test_images"]) for name in targets] == [
        (6, 6), (6, 6), (3, 6), (4, 4)
    ]  # fmt: skip
    # ImageNet-A: its 3 wnid folders in sorted order (README.txt ignored), names from classnames.txt.
    a_test = load_benchmark("imagenet_a", data)["test"]
    assert a_test.features["label"].names == [WNIDS[wnid] for wnid in IMAGENET_A]
    backbone = LoadedBackbone.load(str(tiny_clip_dir))
    for seed, run in zip((1, 2), targets["imagenet_a"]["per_seed"], strict=True):
        features = backbone.features(a_test, batch_size=100)
        expected = accuracy_of(tmp_path / "out" / f"seed{seed}", backbone, features, a_test.features["label"].names)
        assert run["seed"] == seed and run["accuracy"] == pytest.approx(expected, abs=1e-9)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| Method | Learnable? | Source: ImageNet | Target: ImageNet-V2 | Target: ImageNet-Sketch |" in table
    assert f"| CoOp | ✓ | {record['source']['accuracy']:.2f} | {targets['imagenet_v2']['accuracy']:.2f} |" in table

    # Other targets on the same trained prompts: nothing is trained again; the average excludes the source.
    capsys.readouterr()
    cross = transfer([*flags, "--targets", "caltech101", "imagenet_r", "--resume_from_checkpoint", "true"])
    assert capsys.readouterr().out.count("already done") == 2
    assert cross["protocol"] == "cross-dataset" and cross["source"] == record["source"]
    caltech, rendition = cross["targets"]
    assert caltech["num_classes"] == 100 and rendition == targets["imagenet_r"]
    assert cross["average"]["accuracy"] == pytest.approx((caltech["accuracy"] + rendition["accuracy"]) / 2)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| Target: Caltech101 | Target: ImageNet-R | Average (targets) |" in table
    assert f"| {cross['average']['accuracy']:.2f} |\n| Change vs zero-shot |" in table
    with Image.open(tmp_path / "out" / "transfer.png") as plot:  # source, 2 targets and the average: wider
        assert plot.format == "PNG" and plot.width > 800
    # A method that fits nothing on the targets' classes is marked, and the table says what it is there.
    note = PROMPT_METHODS["lp++"].zero_shot_note("the targets' classes")
    marked = transfer_table(cross, "LP++", note=note)
    assert "| LP++ † | ✓ |" in marked and marked.rstrip().endswith(
        "† LP++ fits nothing on the targets' classes: there it is zero-shot CLIP with its own class prompts."
    )
    assert PROMPT_METHODS["coop"].zero_shot_note("the targets' classes") is None


def test_class_specific_context_refused_before_training_when_a_target_has_other_classes(tiny_clip_dir, tmp_path):
    data = tmp_path / "data"
    build_fake_imagenet_family(data)
    flags = [*common(tiny_clip_dir, tmp_path / "out", data), "--source", "imagenet", "--shots", "1"]
    flags += ["--class_specific_context", "true", "--targets", "imagenet_v2", "imagenet_a"]
    with pytest.raises(
        ValueError, match=r"--class_specific_context true .* class lists of imagenet_a: train a unified"
    ):
        load_example("transfer").main(flags)
    assert not (tmp_path / "out").exists()
