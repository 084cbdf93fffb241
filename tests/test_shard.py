"""--shard I/N on base-to-new, transfer and the noise study: the shards' work, then the same command without
--shard (resuming), gives the unsharded study's results. (The sweep's test is in test_sweep.py.)"""

import json

import pytest

from coop_hf.runners.shard import Shard
from tests.conftest import DATA, load_example


def flags(tiny_clip_dir, output_dir, *extra):
    return [
        "--model_name_or_path", str(tiny_clip_dir), "--data_dir", str(DATA), "--output_dir", str(output_dir),
        "--disable_tqdm", "true", "--learning_rate", "0.05", "--n_ctx", "4", "--num_train_epochs", "1",
        "--seeds", "1", "2", *extra,
    ]  # fmt: skip


def sharded_then_plain(script, tiny_clip_dir, tmp_path, capsys, *extra):
    """(the unsharded result, the result of shards 1/2 and 2/2 then the plain command resuming)."""
    main = load_example(script).main
    whole = main(flags(tiny_clip_dir, tmp_path / "whole", *extra))
    for shard in ("1/2", "2/2"):
        assert main(flags(tiny_clip_dir, tmp_path / "sharded", *extra, "--shard", shard)) in ({}, [])
        out = capsys.readouterr().out
        assert f"shard {shard}: 1 of the study's 2 " in out and "--resume_from_checkpoint true" in out
        assert not (tmp_path / "sharded" / "results.md").exists()
    plain = main(flags(tiny_clip_dir, tmp_path / "sharded", *extra, "--resume_from_checkpoint", "true"))
    out = capsys.readouterr().out
    assert out.count("already done") == 2 and "training" not in out  # nothing trained again
    return whole, plain


def without_paths(record):
    """The record without the absolute paths of its prompts (the two studies live in two folders)."""
    text = json.dumps(record).replace("/whole/", "/X/").replace("/sharded/", "/X/")
    return json.loads(text)


@pytest.mark.slow
def test_transfer_shards_its_seeds(tiny_clip_dir, tmp_path, capsys):
    whole, plain = sharded_then_plain(
        "transfer", tiny_clip_dir, tmp_path, capsys, "--source", "caltech101", "--targets", "oxford_flowers",
        "--shots", "1",
    )  # fmt: skip
    assert without_paths(plain) == without_paths(whole)
    assert (tmp_path / "sharded" / "transfer.png").is_file()


@pytest.mark.slow
def test_base_to_new_shards_its_dataset_seed_pairs(tiny_clip_dir, tmp_path, capsys):
    whole, plain = sharded_then_plain(
        "base_to_new", tiny_clip_dir, tmp_path, capsys, "--dataset", "caltech101", "--shots", "1"
    )
    assert without_paths(plain) == without_paths(whole)
    assert (tmp_path / "sharded" / "base_to_new.png").is_file()


@pytest.mark.slow
def test_noise_study_shards_its_runs(tiny_clip_dir, tmp_path, capsys):
    main = load_example("train_noisy").main
    extra = ["--dataset", "caltech101", "--shots", "2", "--study_methods", "coop:ce", "--noise_rates", "0", "0.5"]
    extra += ["--seeds", "1", "--max_steps", "2"]  # one seed: the runs are what the shards split
    whole = main(flags(tiny_clip_dir, tmp_path / "whole", *extra))
    for shard in ("1/2", "2/2"):
        assert main(flags(tiny_clip_dir, tmp_path / "sharded", *extra, "--shard", shard)) == {}
        assert f"shard {shard}: 1 of the study's 2 runs done" in capsys.readouterr().out
    plain = main(flags(tiny_clip_dir, tmp_path / "sharded", *extra, "--resume_from_checkpoint", "true"))
    assert "already done" in capsys.readouterr().out
    assert without_paths(plain) == without_paths(whole)


def test_shard_flag():
    assert Shard.parse("2/3").select(list("abcdefg")) == ["b", "e"]
    assert Shard.parse(None) is None
    for bad in ("0/2", "3/2", "1-2", "a/b"):
        with pytest.raises(ValueError, match="--shard takes I/N"):
            Shard.parse(bad)
    with pytest.raises(ValueError, match="drop --overwrite_output_dir"):
        Shard.parse("1/2", overwrite=True)


@pytest.mark.parametrize("count", range(1, 6))
@pytest.mark.parametrize("cells", range(10))
def test_the_shards_split_the_grid_into_disjoint_stable_parts(count, cells):
    """Shards 1/N ... N/N: each cell of the grid in exactly one part, in the grid's order, the same on every call."""
    grid = [f"cell{index}" for index in range(cells)]
    parts = [Shard(index, count).select(grid) for index in range(1, count + 1)]
    for index, part in enumerate(parts, start=1):
        assert Shard(index, count).select(grid) == part  # stable
        assert Shard.parse(f"{index}/{count}").select(list(grid)) == part
        assert part == sorted(part, key=grid.index)  # in the grid's order
        for other in parts[index:]:
            assert not set(part) & set(other), f"shards of {count} overlap on a grid of {cells}"
    covered = sorted(cell for part in parts for cell in part)
    assert covered == sorted(grid), f"the {count} shards do not cover a grid of {cells} exactly once"
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1  # balanced
