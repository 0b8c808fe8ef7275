"""The HTML report: one self-contained file, untrusted text escaped, and images that really render.

Rollouts come from the real shapes environment, renderer and store; the server is replaced at its
boundary by scripted replies, some of them hostile HTML. The screenshot test opens the report in headless
Chromium and finds the drawn shapes' exact palette colours in the screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foveal.renderers.inference.wire import GenerateRequest, SamplingParams
from foveal.renderers.rendering import Renderer
from foveal.renderers.store import ImageStore
from foveal.verifiers.datasets.shapes import PALETTE
from foveal.verifiers.environments.shapes import load_environment
from foveal.verifiers.eval.report import write_report
from foveal.verifiers.eval.results import read_results, write_results
from foveal.verifiers.eval.summary import summarize
from foveal.verifiers.rollout import Rollout
from foveal.verifiers.token_policy import TokenPolicy

sys.path.insert(0, str(Path(__file__).parent))
from verifiers_scripted import ScriptedClient  # noqa: E402

HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="alert(1)"> & "quotes"'


class Page(HTMLParser):
    """Every tag with its attributes, and the text between them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class TextLines(HTMLParser):
    """The page's text as a browser lays it out: a block element (div, heading, table row) starts a new line,
    inline ones (span, img) continue the current one."""

    BLOCKS = frozenset({"div", "h1", "h2", "table", "tr", "p", "br"})

    def __init__(self) -> None:
        super().__init__()
        self.chunks = [""]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.chunks.append("")

    def handle_endtag(self, tag: str) -> None:
        self.handle_starttag(tag, [])

    def handle_data(self, data: str) -> None:
        self.chunks[-1] += data

    @property
    def lines(self) -> list[str]:
        return [chunk.strip() for chunk in self.chunks if chunk.strip()]


def evaluated(renderer: Renderer, examples: int = 4) -> list[list[Rollout]]:
    env = load_environment(num_eval=examples)
    answers = {e.example_id: e.answer for e in env.dataset("eval")}

    def script(request: GenerateRequest, session: str | None) -> str:
        example_id, index = (session or "").split("/")[1:]
        return HOSTILE if index == "1" else answers[example_id]

    client = ScriptedClient(renderer, script)
    sampling = SamplingParams(max_tokens=64)
    return asyncio.run(
        env.evaluate(
            env.dataset("eval").take(examples), TokenPolicy(renderer, client), sampling, rollouts_per_example=2
        )
    )


def report(tmp_path: Path, renderer: Renderer, store: ImageStore) -> tuple[Path, list[list[Rollout]]]:
    groups = evaluated(renderer)
    summary = summarize(groups, model="tiny", split="eval")
    write_results(tmp_path / "out", groups, summary)
    return write_report(tmp_path / "out" / "report.html", summary, groups, store), groups


def test_report_is_self_contained_and_escapes_untrusted_text(
    tmp_path: Path, renderer_for: Callable[[str], Renderer], store: ImageStore
) -> None:
    path, groups = report(tmp_path, renderer_for("qwen2_5_vl"), store)
    html = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags
    assert not [attrs for _, attrs in page.tags if any(name.startswith("on") for name in attrs)]
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 4  # one per example: the prompt image, shown once above its rollouts
    for attrs, group in zip(images, groups):
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        (asset,) = group[0].images
        assert base64.b64decode(src.split(",", 1)[1]) == store.read_verified(asset.uri, asset.hash)
    assert not [a for _, attrs in page.tags for a in attrs.values() if a and a.startswith(("http:", "https:", "file:"))]
    assert "&lt;script&gt;" in html and HOSTILE in "".join(page.text)  # shown as text, verbatim
    csp = next(
        attrs for tag, attrs in page.tags if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in (csp["content"] or "")
    assert "pass@2" in html and "mean reward" in html


def test_each_message_shows_its_role_as_a_label_on_its_own_line(
    tmp_path: Path, renderer_for: Callable[[str], Renderer], store: ImageStore
) -> None:
    path, groups = report(tmp_path, renderer_for("qwen2_5_vl"), store)
    page = TextLines()
    page.feed(path.read_text(encoding="utf-8"))
    labelled = set(zip(page.lines, page.lines[1:]))
    for group in groups:
        assert ("answer", group[0].answer) in labelled
        for rollout in group:
            (completion,) = rollout.completion
            assert isinstance(completion.content, str) and completion.content
            assert ("assistant", completion.content) in labelled
    assert not [line for line in page.lines if line.startswith("assistant") and line != "assistant"]


def test_results_file_round_trips(tmp_path: Path, renderer_for: Callable[[str], Renderer], store: ImageStore) -> None:
    _, groups = report(tmp_path, renderer_for("qwen2_5_vl"), store)
    assert read_results(tmp_path / "out" / "results.jsonl") == [r for group in groups for r in group]


def test_a_missing_image_is_reported_not_fatal(
    tmp_path: Path, renderer_for: Callable[[str], Renderer], store: ImageStore
) -> None:
    groups = evaluated(renderer_for("qwen2_5_vl"), examples=1)
    Path(groups[0][0].images[0].uri.removeprefix("file://")).unlink()
    path = write_report(tmp_path / "r.html", summarize(groups, model="m", split="eval"), groups, store)
    assert "[image unavailable: MissingAsset" in path.read_text(encoding="utf-8")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (CI installs the Debian `chromium` package)")
def test_report_images_render_in_headless_chromium(
    tmp_path: Path, renderer_for: Callable[[str], Renderer], store: ImageStore
) -> None:
    path, groups = report(tmp_path, renderer_for("qwen2_5_vl"), store)
    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-color-profile=srgb",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1000,2400", path.as_uri(),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    found = {name: int(np.all(pixels == np.array(rgb, dtype=np.uint8), axis=-1).sum()) for name, rgb in PALETTE.items()}
    drawn = {shape["color"] for shape in groups[0][0].info["shapes"]}  # type: ignore[union-attr, index]
    # Shapes cover hundreds of pixels each at 2x scale; page text and styles never use palette colours.
    assert all(found[color] > 200 for color in drawn), (drawn, found)
    control = write_report(tmp_path / "empty.html", summarize(groups, model="m", split="eval"), [], store)
    subprocess.run(
        [*command[:-2], f"--screenshot={tmp_path / 'empty.png'}", command[-2], control.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    empty = np.asarray(Image.open(tmp_path / "empty.png").convert("RGB"))
    assert not any(np.all(empty == np.array(rgb, dtype=np.uint8), axis=-1).any() for rgb in PALETTE.values())
