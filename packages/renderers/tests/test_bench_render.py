"""The renderers benchmark (benchmarks/renderers/bench_render.py) still runs and reports what it claims.

A smoke run on a few small conversations through the real CLI entry point: the JSON it writes has every
pass and kind, both paths produced the same token ids, and the byte counts are sane. Timings are only
checked to be measured (positive), never compared: speed is the benchmark's business, not a test's.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import orjson
import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "renderers"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    pytest.importorskip("torch", reason="the HF baseline loads AutoProcessor, whose video processor needs torch")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCH_DIR))
        return importlib.import_module("bench_render")


def test_quick_run_writes_a_complete_sane_report(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    assert bench.main(["--quick", "--n", "6", "--seed", "3", "--out", str(out)]) == 0
    report = orjson.loads(out.read_bytes())

    workload = report["workload"]
    assert workload["conversations"] == 6
    assert workload["image_conversations"] > 0 and workload["text_conversations"] > 0
    assert workload["images"] == workload["photo_jpeg"] + workload["screenshot_png"]
    rows = {(row["pass"], row["kind"]): row for row in report["passes"]}
    assert set(rows) == {(name, kind) for name in bench.PASSES for kind in ("image", "text")}
    for (name, kind), row in rows.items():
        expected = workload["image_conversations" if kind == "image" else "text_conversations"]
        assert row["conversations"] == expected, (name, kind)
        assert row["ours_samples_per_s"] > 0 and row["hf_samples_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["ours_samples_per_s"] / row["hf_samples_per_s"])
    assert sum(row["images"] for row in report["passes"] if row["pass"] == "first_sight") == workload["images"]

    assert report["parity"] == {"checked": 3 * 6, "mismatches": 0}
    sizes = report["bytes_per_image"]
    assert sizes["descriptor_json"]["count"] == workload["images"]
    assert 0 < sizes["descriptor_json"]["max"] <= bench.DESCRIPTOR_TARGET_BYTES
    assert sizes["mmraw_ref"]["max"] > sizes["descriptor_json"]["max"]  # base64 of the same JSON
    assert sizes["hf_pixel_values"]["mean"] > 100 * sizes["descriptor_json"]["mean"]
    assert report["targets"]["descriptor_bytes_per_image"]["met"] is True
    assert report["first_sight_breakdown"]["images"] == workload["images"]
    assert report["command"].endswith("--quick --n 6 --seed 3 --out " + str(out))

    printed = capsys.readouterr().out
    assert all(name in printed for name in bench.PASSES)
    assert str(out) in printed


def test_all_families_run_each_against_its_own_baseline_with_parity(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from foveal.renderers.tiny import FAMILIES, family_spec

    out = tmp_path / "all.json"
    assert bench.main(["--family", "all", "--quick", "--n", "4", "--seed", "5", "--out", str(out)]) == 0
    report = orjson.loads(out.read_bytes())

    assert list(report["families"]) == list(FAMILIES)
    assert {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3", "llama3", "gemma3"} <= set(FAMILIES)
    assert report["parity"] == {"checked": 3 * 4 * len(FAMILIES), "mismatches": 0}
    for family, family_report in report["families"].items():
        assert family_report["config"]["family"] == family
        assert family_report["parity"] == {"checked": 3 * 4, "mismatches": 0}, family
        workload = family_report["workload"]
        assert workload["conversations"] == 4
        if not family_spec(family).is_vlm:  # the same conversations without their images
            assert workload["images"] == 0 and family_report["first_sight_breakdown"] is None
            assert family_report["targets"]["descriptor_bytes_per_image"]["met"] is None  # no image, no target
        rows = [row for row in report["summary"] if row["family"] == family]
        assert {(row["pass"], row["kind"]) for row in rows} == {(p, k) for p in bench.PASSES for k in ("image", "text")}
        assert all(row["speedup"] > 0 for row in rows if row["conversations"])

    printed = capsys.readouterr().out
    assert "per family, against its own HF baseline" in printed
    assert all(f"renderers benchmark: family {family}," in printed for family in FAMILIES)
