"""load_config: TOML files merged in order, then overrides, with every problem named by its dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foveal.configs import ConfigError, EvalConfig, RLConfig, SFTConfig, load_config
from foveal.configs.overrides import parse_overrides


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def test_defaults_of_every_run_kind_load_without_files() -> None:
    assert load_config(SFTConfig) == SFTConfig()
    assert load_config(RLConfig).trainer.loss.kind == "importance_sampling"
    assert load_config(EvalConfig).inference.host == "127.0.0.1"


def test_gemma3_is_a_model_and_renderer_family(tmp_path: Path) -> None:
    text = '[model]\nname_or_path = "google/gemma-3-4b-it"\nfamily = "gemma3"\n[renderer]\nfamily = "gemma3"\n'
    loaded = load_config(SFTConfig, [write(tmp_path / "a.toml", text)])
    assert (loaded.model.family, loaded.renderer.family) == ("gemma3", "gemma3")
    assert load_config(RLConfig, overrides=["--model.family", "gemma3"]).model.family == "gemma3"


def test_unknown_key_names_its_dotted_path_and_the_closest_valid_key(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", "[trainer.optim]\nlrr = 0.1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, [config])
    assert problems(excinfo) == ["trainer.optim.lrr: no such key (did you mean trainer.optim.lr?)"]


def test_key_in_the_wrong_section_suggests_where_it_lives() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, overrides=["--trainer.lr", "0.1"])
    assert problems(excinfo) == ["trainer.lr: no such key (did you mean trainer.optim.lr?)"]


def test_unknown_key_inside_a_list_of_tables_keeps_the_index(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", '[[orchestrator.environments]]\nname = "a"\nwieght = 2\n')
    with pytest.raises(ConfigError) as excinfo:
        load_config(RLConfig, [config])
    expected = "orchestrator.environments[0].wieght: no such key (did you mean orchestrator.environments[0].weight?)"
    assert problems(excinfo) == [expected]


def test_wrong_type_names_the_path_the_expectation_and_the_value(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", '[trainer]\nseq_len = "long"\n[model]\ndtype = "fp16"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, [config])
    found = problems(excinfo)
    assert len(found) == 2
    assert found[0].startswith("model.dtype: 'auto', 'float32' or 'bfloat16'") and found[0].endswith("(got 'fp16')")
    assert found[1].startswith("trainer.seq_len: a valid integer") and found[1].endswith("(got 'long')")


def test_every_problem_is_listed_one_per_line(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", "[trainer]\nseq_len = 0\nbogus = 1\n[logging]\nlog_every = -1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, [config])
    lines = str(excinfo.value).splitlines()
    assert lines[0] == "invalid SFTConfig (3 problems):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "logging.log_every",
        "trainer.seq_len",
        "trainer.bogus",
    ]


def test_missing_file_and_invalid_toml_name_the_file_and_line(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.toml", "[trainer]\nseq_len = = 4\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, [tmp_path / "absent.toml", broken])
    assert problems(excinfo) == [
        f"{tmp_path / 'absent.toml'}: an existing TOML file (got no such file)",
        f"{broken}:2:11: valid TOML (got invalid value)",
    ]


def test_later_files_win_and_tables_merge_key_by_key(tmp_path: Path) -> None:
    first = write(tmp_path / "1.toml", "[trainer]\nseq_len = 1024\nseed = 7\n[trainer.optim]\nlr = 0.1\n")
    second = write(tmp_path / "2.toml", "[trainer]\nseq_len = 512\n[trainer.optim]\neps = 1e-6\n")
    config = load_config(SFTConfig, [first, second])
    assert (config.trainer.seq_len, config.trainer.seed) == (512, 7)
    assert (config.trainer.optim.lr, config.trainer.optim.eps) == (0.1, 1e-6)
    assert load_config(SFTConfig, [second, first]).trainer.seq_len == 1024


def test_later_file_replaces_arrays_instead_of_appending(tmp_path: Path) -> None:
    first = write(tmp_path / "1.toml", '[multimodal]\nallowed_url_schemes = ["file", "data", "https"]\n')
    second = write(tmp_path / "2.toml", '[multimodal]\nallowed_url_schemes = ["file"]\n')
    assert load_config(SFTConfig, [first, second]).multimodal.allowed_url_schemes == ["file"]


def test_overrides_win_over_files_and_the_last_override_wins(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", "[trainer.optim]\nlr = 0.1\n")
    loaded = load_config(SFTConfig, [config], ["--trainer.optim.lr", "0.2", "--trainer.optim.lr=3e-4"])
    assert loaded.trainer.optim.lr == 3e-4


def test_override_strings_are_coerced_to_the_field_types(tmp_path: Path) -> None:
    loaded = load_config(
        RLConfig,
        overrides=[
            "--trainer.optim.lr=1e-5",
            "--trainer.checkpoint.resume",
            "true",
            "--trainer.optim.betas",
            "[0.9, 0.95]",
            "--multimodal.allowed-image-roots",
            f'["{tmp_path}"]',
            "--orchestrator.environments",
            '[{name = "count", weight = 2.5, args = {limit = 3}}]',
            "--multimodal.min_pixels",
            "3136",
            "--logging.run_dir",
            str(tmp_path / "run"),
        ],
    )
    assert loaded.trainer.optim.lr == 1e-5
    assert loaded.trainer.checkpoint.resume is True
    assert loaded.trainer.optim.betas == (0.9, 0.95)
    assert loaded.multimodal.allowed_image_roots == [tmp_path]
    assert loaded.orchestrator.environments[0].model_dump() == {"name": "count", "weight": 2.5, "args": {"limit": 3}}
    assert loaded.multimodal.min_pixels == 3136
    assert loaded.logging.run_dir == tmp_path / "run"


def test_null_override_resets_an_optional_field_to_none(tmp_path: Path) -> None:
    config = write(tmp_path / "a.toml", '[logging]\nwandb_project = "foveal"\n')
    assert load_config(SFTConfig, [config]).logging.wandb_project == "foveal"
    assert load_config(SFTConfig, [config], ["--logging.wandb_project", "null"]).logging.wandb_project is None


def test_malformed_overrides_are_all_reported() -> None:
    with pytest.raises(ConfigError) as excinfo:
        tokens = ["stray", "--trainer..seq_len", "1", "--trainer.optim.betas", "[0.9,", "--sft.max_steps"]
        load_config(SFTConfig, overrides=tokens)
    assert problems(excinfo) == [
        "stray: an override like --section.key VALUE (got 'stray')",
        "--trainer..seq_len: a dotted key of identifiers, like trainer.optim.lr",
        "trainer.optim.betas: a JSON or TOML list or table (got '[0.9,')",
        "--sft.max_steps: a value after the key (got nothing)",
    ]


def test_override_below_a_scalar_is_reported_at_the_scalar(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(SFTConfig, overrides=["--trainer.seq_len=5", "--trainer.seq_len.x=1"])
    assert problems(excinfo) == ["trainer.seq_len: a table to hold trainer.seq_len.x (got '5')"]


def test_environment_variables_never_change_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRAINER__SEQ_LEN", "FOVEAL_TRAINER__SEQ_LEN", "trainer.seq_len", "SEQ_LEN"):
        monkeypatch.setenv(name, "7")
    assert load_config(SFTConfig).trainer.seq_len == SFTConfig().trainer.seq_len


@given(
    key=st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8}){0,3}", fullmatch=True),
    value=st.text(max_size=20).filter(lambda value: not value.startswith("--")),
)
def test_space_and_equals_forms_of_an_override_parse_the_same(key: str, value: str) -> None:
    assert parse_overrides([f"--{key}", value]) == parse_overrides([f"--{key}={value}"])


def test_glm4v_is_a_model_and_renderer_family() -> None:
    loaded = load_config(RLConfig, overrides=["--model.family", "glm4v", "--renderer.family", "glm4v"])
    assert (loaded.model.family, loaded.renderer.family) == ("glm4v", "glm4v")


def test_internvl_is_a_model_and_renderer_family() -> None:
    loaded = load_config(RLConfig, overrides=["--model.family", "internvl", "--renderer.family", "internvl"])
    assert (loaded.model.family, loaded.renderer.family) == ("internvl", "internvl")


def test_smolvlm_is_a_model_and_renderer_family() -> None:
    loaded = load_config(RLConfig, overrides=["--model.family", "smolvlm", "--renderer.family", "smolvlm"])
    assert (loaded.model.family, loaded.renderer.family) == ("smolvlm", "smolvlm")
