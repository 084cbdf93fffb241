"""Pre-training checks: every image of a split decodes; the dataset's class list matches the model's."""

import datasets
import pytest
from PIL import Image

from coop_hf.data import UnreadableImageError, check_classnames_match, check_images


def _dataset(paths: list[str]) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    return datasets.Dataset.from_dict({"image": paths, "label": [0] * len(paths)}, features=features)


def test_check_images_passes_on_readable_images(tmp_path):
    paths = []
    for index, mode in enumerate(["RGB", "L", "RGBA", "CMYK"]):
        path = tmp_path / f"{index}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (4, 4)).save(path)
        paths.append(str(path))
    check_images(_dataset(paths))


def test_check_images_lists_every_unreadable_file(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    bad_one, bad_two = tmp_path / "bad_one.jpg", tmp_path / "bad_two.png"
    bad_one.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    bad_two.write_bytes(b"garbage")
    dataset = _dataset([str(good), str(bad_one), str(good), str(bad_two)])
    with pytest.raises(UnreadableImageError) as info:
        check_images(dataset)
    message = str(info.value)
    assert "2 of 4 image(s) cannot be read" in message
    assert "row 1:" in message and str(bad_one) in message
    assert "row 3:" in message and str(bad_two) in message
    assert isinstance(dataset.features["image"], datasets.Image) and dataset.features["image"].decode


def test_a_file_decoded_once_is_not_decoded_again_until_it_changes(tmp_path, monkeypatch):
    import coop_hf.data.validation as validation

    paths = [tmp_path / f"{index}.png" for index in range(3)]
    for path in paths:
        Image.new("RGB", (4, 4)).save(path)
    decoded, load_rgb = [], validation.load_rgb
    monkeypatch.setattr(validation, "load_rgb", lambda image: decoded.append(image) or load_rgb(image))
    dataset = _dataset([str(path) for path in paths])
    check_images(dataset)
    assert len(decoded) == 3
    check_images(dataset)  # a study's next method or seed on the same split
    assert len(decoded) == 3
    paths[1].write_bytes(b"garbage")  # the file changed since it was read
    with pytest.raises(UnreadableImageError, match=f"1 of 3 image\\(s\\) cannot be read:\n  row 1: .*{paths[1]}"):
        check_images(dataset)
    assert len(decoded) == 4


def test_check_classnames():
    check_classnames_match(["cat", "dog"], ("cat", "dog"))
    with pytest.raises(ValueError, match="differ first at label 1: the dataset has 'dog', the model 'wolf'"):
        check_classnames_match(["cat", "dog", "fox"], ["cat", "wolf", "fox"])
    with pytest.raises(ValueError, match="dataset has 3 classes, the model 2.*label 2, is the dataset's 'fox'"):
        check_classnames_match(["cat", "dog", "fox"], ["cat", "dog"])
    with pytest.raises(ValueError, match="label 1, is the model's 'dog'"):
        check_classnames_match(["cat"], ["cat", "dog"])
