"""`foveal smoke` runs end to end on CPU and is registered for the `foveal` CLI."""

from __future__ import annotations

import argparse
import math
from importlib.metadata import entry_points

import pytest

from foveal.configs.command import ENTRY_POINT_GROUP, Command
from foveal.trainer.commands import smoke as command
from foveal.trainer.smoke import run_smoke


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="foveal smoke")
    command.configure(parser)
    return parser.parse_args(list(argv))


def test_smoke_is_registered_as_a_foveal_command():
    (entry,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "smoke"]
    assert entry.load() is command
    assert isinstance(command, Command) and command.name == "smoke"


def test_smoke_command_prints_a_consistent_summary(tiny_cache_root, tiny_model_dir, capsys):
    assert command.run(parse("--cache-root", str(tiny_cache_root))) == 0
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["family"] == "qwen2_5_vl"
    assert lines["folder"] == str(tiny_model_dir("qwen2_5_vl"))
    t, h, w = (int(x) for x in lines["image"].removeprefix("grid").split("]")[0].strip(" [").split(","))
    assert int(lines["placeholders"]) == t * h * w // 4
    assert math.isfinite(float(lines["loss"]))


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_thinking"])
def test_smoke_runs_qwen3_vl(family, tiny_cache_root):
    result = run_smoke(family, tiny_cache_root)
    t, h, w = result.image_grid_thw
    assert result.placeholder_tokens == t * h * w // 4
    assert result.logits_shape[0] == 1 and math.isfinite(result.loss)


def test_smoke_runs_gemma3_whose_grid_is_its_square_of_soft_tokens(tiny_cache_root, capsys):
    assert command.run(parse("--family", "gemma3", "--cache-root", str(tiny_cache_root))) == 0
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["image"] == "grid    [1, 2, 2] (t, h, w tokens)" and lines["placeholders"] == "4"
    assert math.isfinite(float(lines["loss"]))


def test_smoke_runs_glm4v(tiny_cache_root, capsys):
    assert command.run(parse("--family", "glm4v", "--cache-root", str(tiny_cache_root))) == 0
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines["image"].startswith("grid    [1, 14, 22]") and lines["placeholders"] == str(14 * 22 // 4)
    assert math.isfinite(float(lines["loss"]))


def test_smoke_runs_internvl_whose_grid_counts_its_tiles(tiny_cache_root, capsys):
    assert command.run(parse("--family", "internvl", "--cache-root", str(tiny_cache_root))) == 0
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    # 320 x 200 (aspect 1.6) is closest to 3 x 2 tiles (1.5) of the arrangements of at most 12: 6 tiles + a thumbnail.
    assert lines["image"] == "grid    [7, 2, 2] (t, h, w tokens)" and lines["placeholders"] == str(7 * 4)
    assert math.isfinite(float(lines["loss"]))


def test_smoke_runs_smolvlm_whose_grid_counts_its_tiles(tiny_cache_root, capsys):
    assert command.run(parse("--family", "smolvlm", "--cache-root", str(tiny_cache_root))) == 0
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    # 320 x 200 -> 128 x 80 -> a 128 x 96 canvas of 32 px tiles: 4 x 3 tiles + the global view, 4 tokens each.
    assert lines["image"] == "grid    [13, 2, 2] (t, h, w tokens)" and lines["placeholders"] == str(13 * 4)
    assert math.isfinite(float(lines["loss"]))


def test_smoke_rejects_a_text_only_family():
    with pytest.raises(SystemExit):
        parse("--family", "qwen3")
