"""The shipped pipeline examples (``examples/pipelines/``) load and run end to end.

Each example is copied to a temporary directory first (its sinks and image step write beside
their YAML) and served in process (:func:`genspool.testing.inprocess.serve`) with the
pipelines its own models file declares. The reviews example runs on the bundled SmolLM2 model,
as a user runs it; the others serve the model name they use by ``provider: echo`` (a model
that answers with the last user message), so they check the pipeline's plumbing in seconds.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from PIL import Image, ImageStat

from genspool.config import ModelConfig, read_models_file
from genspool.pipelines.spec import Pipeline, load_pipelines
from genspool.pipelines.triggers import FAKE_CLOCK_ENV
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
NAMES = ("reviews", "weekly-report", "social-posts", "image-enhance")
SMOLLM = "smollm2-135m-instruct"
ECHO = [{"name": SMOLLM, "provider": "echo"}]
TERMINAL = ("completed", "failed", "cancelled")


def copied(name: str, tmp: Path) -> Path:
    """The example's directory copied under ``tmp``, without any output of an earlier run."""
    home = tmp / name
    shutil.copytree(EXAMPLES / name, home, ignore=shutil.ignore_patterns("out", "in", "__py*"))
    return home


def loaded(home: Path) -> tuple[list[ModelConfig], dict[str, Pipeline]]:
    """The models and pipelines of the example's models file, as ``genspool serve`` reads
    them."""
    found = read_models_file(home / "models.yaml")
    assert found.base is not None
    return found.models, load_pipelines(found.pipelines, found.source, found.base)


async def start(gs: InProcess, pipeline: str, body: dict[str, Any] | None = None) -> str:
    r = await gs.client.post(f"/v1/pipelines/{pipeline}/runs", json=body or {})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def finished(gs: InProcess, pipeline: str, run_id: str, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            r = await gs.client.get(f"/v1/pipelines/{pipeline}/runs/{run_id}")
            assert r.status_code == 200, r.text
            if r.json()["status"] in TERMINAL:
                return dict(r.json())
            await asyncio.sleep(0.1)


async def content(gs: InProcess, file_id: str) -> bytes:
    r = await gs.client.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200, r.text
    return r.content


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


@pytest.mark.parametrize("name", NAMES)
def test_every_example_models_file_loads(name: str) -> None:
    models, pipelines = loaded(EXAMPLES / name)
    assert list(pipelines) == [name]
    served = {m.name for m in models}
    for step in pipelines[name].steps:
        if step.call is not None:
            assert step.call.model in served, (name, step.id)
    assert (EXAMPLES / name / "README.md").is_file()


# -- reviews: the bundled SmolLM2 model, for real ----------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_the_reviews_example_runs_on_smollm2(tmp_path: Path) -> None:
    home = copied("reviews", tmp_path)
    models, pipelines = loaded(home)
    reviews = jsonl((home / "reviews.jsonl").read_bytes())
    used = [m for m in models if m.name == SMOLLM]
    async with serve(used, worker=True, retry=FAST_RETRY, pipelines=pipelines) as gs:
        began = time.monotonic()
        run = await finished(gs, "reviews", await start(gs, "reviews"), timeout=1100)
        took = time.monotonic() - began
        report, rows = [await content(gs, f) for f in run["output_file_ids"]]
    print(f"{len(reviews)} reviews on {SMOLLM}: {took:.0f} s")
    assert run["status"] == "completed", run
    assert run["counts"]["succeeded"] == len(reviews) == 30, run["counts"]
    text = report.decode()
    assert (home / "out" / "summary.md").read_text() == text
    # Every review in the table once, in file order.
    table = re.findall(r"^\| (r\d\d) \|", text, flags=re.MULTILINE)
    assert table == [r["id"] for r in reviews]
    # The counts by sentiment add up to every review, and agree with the JSONL output.
    counted = {k: int(n) for k, n in re.findall(r"^\| (\w+) \| (\d+) \| \d+% \|$", text, re.M)}
    assert set(counted) == {"positive", "negative", "mixed", "unclear"}
    assert sum(counted.values()) == len(reviews)
    assert counted["positive"] > 0 and counted["negative"] > 0, counted  # not one label for all
    written = jsonl(rows)
    assert [w["id"] for w in written] == [r["id"] for r in reviews]
    by_label = Counter(w["sentiment"] for w in written)
    assert {k: by_label.get(k, 0) for k in counted} == counted
    assert sum(1 for w in written if w["themes"]) >= len(reviews) // 2, written


# -- weekly report: echo model, by HTTP and on its Monday-morning schedule ---------------------


def sales(home: Path) -> list[dict[str, str]]:
    with (home / "sales.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def check_weekly(text: str, rows: list[dict[str, str]]) -> None:
    revenue = sum(float(r["revenue"]) for r in rows)
    assert f"Revenue **{revenue:,.0f} EUR**" in text
    regions = sorted({r["region"] for r in rows})
    for region in regions:
        mine = [r for r in rows if r["region"] == region]
        total = sum(float(r["revenue"]) for r in mine)
        assert re.search(rf"^\| {region} \| {total:,.0f} EUR \|", text, re.MULTILINE), region
    # Every row once under its region, with the model's sentence (the echo: the prompt).
    every = text.split("## Every region and product", 1)[1]
    listed = re.findall(r"^### (\w+)$|^\| ([^|]+?) \| (\d+) \|", every, re.MULTILINE)
    seen, region = [], ""
    for heading, product, units in listed:
        if heading:
            region = heading
        else:
            seen.append((region, product, units))
    assert sorted(seen) == sorted((r["region"], r["product"], r["units"]) for r in rows)
    assert "Espresso machine, North region: revenue fell 37.0% to 5933 EUR." in every


async def test_the_weekly_report_example_runs_and_reports_every_row(tmp_path: Path) -> None:
    home = copied("weekly-report", tmp_path)
    _, pipelines = loaded(home)
    rows = sales(home)
    assert len(rows) == 50
    async with serve(ECHO, worker=True, retry=FAST_RETRY, pipelines=pipelines) as gs:
        run = await finished(gs, "weekly-report", await start(gs, "weekly-report"), timeout=60)
        assert run["status"] == "completed", run
        assert run["counts"]["succeeded"] == 50
        report = (await content(gs, run["output_file_ids"][0])).decode()
        assert (home / "out" / "weekly-report.md").read_text() == report
        check_weekly(report, rows)
        again = await finished(gs, "weekly-report", await start(gs, "weekly-report"), timeout=60)
    # The run's id is in the key: a second run reports on every row again.
    assert again["counts"]["succeeded"] == 50, again["counts"]


async def test_the_weekly_report_runs_on_monday_at_eight_in_paris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = copied("weekly-report", tmp_path)
    _, pipelines = loaded(home)
    eight = datetime(2024, 11, 25, 8, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()  # a Monday
    monkeypatch.setenv(FAKE_CLOCK_ENV, f"{time.time()}:{eight - 1.5}:1")  # 1.5 s before it
    async with serve(ECHO, worker=True, retry=FAST_RETRY, pipelines=pipelines) as gs:
        async with asyncio.timeout(30):
            while not (runs := await runs_of(gs, "weekly-report")):
                await asyncio.sleep(0.1)
        run = await finished(gs, "weekly-report", runs[0]["id"], timeout=60)
        ticks = (await gs.client.get("/v1/pipelines/weekly-report/ticks")).json()["data"]
    assert run["trigger"] == "schedule" and run["status"] == "completed", run
    assert [(t["at"], t["outcome"], t["run_id"]) for t in ticks] == [(eight, "fired", run["id"])]
    check_weekly((home / "out" / "weekly-report.md").read_text(), sales(home))


# -- social posts: echo model, a filter that drops empty drafts, a CSV ------------------------


async def test_the_social_posts_example_drafts_posts_that_fit_and_drops_empty_ones(
    tmp_path: Path,
) -> None:
    home = copied("social-posts", tmp_path)
    _, pipelines = loaded(home)
    with (home / "announcements.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # The echo model answers with the announcement: a blank one is an empty draft, a long one
    # a draft to cut.
    extra = [
        {"product": "Mystery Box", "announcement": "", "link": "https://example.com/box"},
        {"product": "Long Story", "announcement": "We have news. " * 40, "link": "https://x.io/l"},
    ]
    with (home / "announcements.csv").open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=["product", "announcement", "link"]).writerows(extra)
    async with serve(ECHO, worker=True, retry=FAST_RETRY, pipelines=pipelines) as gs:
        run = await finished(gs, "social-posts", await start(gs, "social-posts"), timeout=60)
        assert run["status"] == "completed", run
        assert run["counts"] | {"read": 0} == {
            "total": 14, "read": 0, "succeeded": 13, "failed": 0, "skipped": 1, "pending": 0,
        }  # fmt: skip
        data = await content(gs, run["output_file_ids"][0])
        skipped = await gs.client.get(
            f"/v1/pipelines/social-posts/runs/{run['id']}/items?status=skipped"
        )
    assert [i["key"] for i in skipped.json()["data"]] == ["Mystery Box"]
    assert (home / "out" / "posts.csv").read_bytes() == data
    posts = list(csv.DictReader(io.StringIO(data.decode())))
    assert [p["product"] for p in posts] == [r["product"] for r in rows] + ["Long Story"]
    for post, row in zip(posts, [*rows, extra[1]], strict=True):
        assert len(post["post"]) <= 280, post
        assert post["post"].endswith(" " + row["link"]) and post["link"] == row["link"]
    for post, row in zip(posts, rows, strict=False):
        assert post["post"] == f"{row['announcement']} {row['link']}"  # short: not cut
    cut = posts[-1]["post"]
    assert cut.startswith("We have news. We have") and cut.endswith("… https://x.io/l")


# -- image enhancement: files dropped into in/ start runs --------------------------------------


def make_samples(home: Path, count: int, start_at: int) -> None:
    script = home / "make_samples.py"
    args = [str(home / "in"), "--count", str(count), "--start", str(start_at)]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True)


def spread(image: Image.Image) -> float:
    """The standard deviation of the image's grey levels: low for a dull image."""
    return float(ImageStat.Stat(image.convert("L")).stddev[0])


async def runs_of(gs: InProcess, pipeline: str) -> list[dict[str, Any]]:
    r = await gs.client.get(f"/v1/pipelines/{pipeline}/runs?limit=100")
    return list(r.json()["data"])


async def settled(gs: InProcess, pipeline: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """The pipeline's runs once there are ``count`` and every one has ended."""
    async with asyncio.timeout(timeout):
        while True:
            runs = await runs_of(gs, pipeline)
            if len(runs) >= count and all(r["status"] in TERMINAL for r in runs):
                return runs
            await asyncio.sleep(0.2)


async def test_the_image_example_enhances_each_dropped_jpeg_once(tmp_path: Path) -> None:
    home = copied("image-enhance", tmp_path)
    models, pipelines = loaded(home)
    assert models == []
    async with serve(models, worker=True, retry=FAST_RETRY, pipelines=pipelines) as gs:
        make_samples(home, 3, 1)  # three land at once: three runs, one per file
        runs = await settled(gs, "image-enhance", 3, timeout=90)
        assert {r["trigger"] for r in runs} == {"files"}
        assert all(r["status"] == "completed" and r["counts"]["failed"] == 0 for r in runs), runs
        out = sorted(p.name for p in (home / "out").glob("*.webp"))
        assert out == ["sample-1.webp", "sample-2.webp", "sample-3.webp"]
        for name in out:
            with (
                Image.open(home / "out" / name) as image,
                Image.open(home / "in" / name.replace(".webp", ".jpg")) as before,
            ):
                assert image.format == "WEBP" and max(image.size) == 1024
                ratio = before.width / before.height
                assert image.width / image.height == pytest.approx(ratio, rel=0.01)
                assert spread(image) > 1.5 * spread(before)  # the levels were stretched
        make_samples(home, 1, 4)  # a fourth, later: its run does it alone
        runs = await settled(gs, "image-enhance", 4, timeout=60)
        latest = runs[0]
        assert latest["counts"]["succeeded"] == 1 and latest["counts"]["skipped"] == 3, latest
        # A run's output lists every item of its source: those an earlier run finished keep
        # the outputs that run made (they are not made again), the new one has its own.
        listed = {x["input"]: x for x in jsonl(await content(gs, latest["output_file_ids"][0]))}
        assert sorted(listed) == ["sample-1.jpg", "sample-2.jpg", "sample-3.jpg", "sample-4.jpg"]
        fourth = listed["sample-4.jpg"]
        assert fourth["output"] == str(home.resolve() / "out" / "sample-4.webp")
        assert fourth["file_id"].startswith("file-") and fourth["width"] == 1024
        again = await finished(gs, "image-enhance", await start(gs, "image-enhance"), 30)
    assert again["counts"]["skipped"] == 4 and again["counts"]["succeeded"] == 0, again
