"""The Files API end to end: a real ``genspool api`` process on a SQLite file, driven by the
official ``openai`` SDK (create, list with paging, retrieve, content, delete), two tenants'
keys made with the real ``genspool keys`` CLI, a 50 MB upload whose server RSS is sampled from
/proc while it streams, the size limit on a declared and on a chunked upload (413, nothing left
in the blob directory), purposes and expiry validated as OpenAI does. Expiry itself runs in
process on a fake clock, at the end. Echo models stand in for real ones (they compute nothing;
no route here calls a model)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from genspool.core.keys import Scope
from genspool.testing.inprocess import FakeClock, serve
from tests.helpers.api import assert_error, bearer
from tests.helpers.processes import Server, Spawner

MiB = 1024 * 1024
LIMIT = 64 * MiB
MODELS = [{"name": "echo", "provider": "echo"}]


def create_key(spawner: Spawner, db: Path, tenant: str, scopes: str) -> str:
    url = spawner.sqlite_url(db)
    made = spawner.run("keys", "create", "--tenant", tenant, "--scopes", scopes, "--db", url)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "files.db"
    return path


@pytest.fixture(scope="module")
def keys(module_spawner: Spawner, db: Path) -> dict[str, str]:
    return {
        "a": create_key(module_spawner, db, "acme", "submit,read"),
        "b": create_key(module_spawner, db, "beta", "submit,read"),
        "a_read": create_key(module_spawner, db, "acme", "read"),
    }


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, keys: dict[str, str]) -> Server:
    env = {"GENSPOOL_MAX_FILE_BYTES": str(LIMIT), "GENSPOOL_MAX_BODY_BYTES": str(MiB)}
    return module_spawner.server(MODELS, command="api", db=db, env=env)


def sdk(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def blob_dir(db: Path) -> Path:
    return db.with_name(db.name + ".files")


def stored_files(db: Path, tenant: str) -> set[str]:
    """Every file under the tenant's blob folder, part files included."""
    folder = blob_dir(db) / tenant
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_the_sdk_round_trip(server: Server, keys: dict[str, str], db: Path) -> None:
    a = sdk(server, keys["a"])
    data = b"".join(b'{"custom_id": "r%d", "body": {}}\n' % i for i in range(1000))
    made = a.files.create(file=("input.jsonl", data), purpose="batch")
    assert (made.object, made.bytes, made.filename, made.purpose) == (
        "file", len(data), "input.jsonl", "batch"
    )  # fmt: skip
    assert made.status == "processed" and made.id.startswith("file-")
    assert made.expires_at == made.created_at + 30 * 86_400  # batch input, OpenAI's default
    assert made.model_extra and made.model_extra["sha256"] == hashlib.sha256(data).hexdigest()
    assert a.files.retrieve(made.id) == made
    assert a.files.content(made.id).content == data
    assert made.id in stored_files(db, "acme")
    deleted = a.files.delete(made.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (made.id, True, "file")
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(made.id)
    assert made.id not in stored_files(db, "acme")


def test_lists_page_through_everything(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    made = [a.files.create(file=(f"f{i}.txt", b"%d" % i), purpose="user_data").id for i in range(7)]
    page = a.files.list(purpose="user_data", limit=3)
    assert [f.id for f in page.data] == made[:-4:-1] and page.has_more
    walked = [f.id for f in a.files.list(purpose="user_data", limit=3)]  # auto-paging
    assert walked == made[::-1]
    oldest = a.files.list(purpose="user_data", limit=2, order="asc")
    assert [f.id for f in oldest.data] == made[:2]
    raw = httpx.get(
        f"{server.url}/v1/files", params={"limit": 2, "after": made[3]}, headers=bearer(keys["a"])
    ).json()
    assert [f["id"] for f in raw["data"]] == [made[2], made[1]]
    assert (raw["object"], raw["first_id"], raw["last_id"], raw["has_more"]) == (
        "list", made[2], made[1], True
    )  # fmt: skip


def test_another_tenants_file_is_404_everywhere(server: Server, keys: dict[str, str]) -> None:
    a, b = sdk(server, keys["a"]), sdk(server, keys["b"])
    mine = a.files.create(file=("secret.txt", b"acme only"), purpose="user_data")
    for call in (
        lambda: b.files.retrieve(mine.id),
        lambda: b.files.content(mine.id),
        lambda: b.files.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.id not in {f.id for f in b.files.list()}
    assert a.files.retrieve(mine.id).id == mine.id  # still there
    reader = sdk(server, keys["a_read"])
    assert reader.files.content(mine.id).content == b"acme only"
    with pytest.raises(openai.PermissionDeniedError):
        reader.files.create(file=("x.txt", b"x"), purpose="user_data")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Sampler:
    """The highest RSS of a process, sampled every 10 ms from another thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_50_mb_upload_streams_in_little_memory(
    server: Server, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    a = sdk(server, keys["a"])
    a.files.create(file=("warm.txt", b"warm"), purpose="user_data")  # first-use imports
    data = os.urandom(50 * 1_000_000)
    before = rss_kib(server.proc.pid)
    with Sampler(server.proc.pid) as sampler:
        made = a.files.create(file=("big.bin", io.BytesIO(data)), purpose="user_data")
    growth_mib = (sampler.peak - before) / 1024
    with capsys.disabled():
        print(f"\n50 MB upload: API RSS {before / 1024:.1f} MiB -> peak {sampler.peak / 1024:.1f}"
              f" MiB (growth {growth_mib:.1f} MiB)")  # fmt: skip
    assert growth_mib < 40, f"the API's RSS grew by {growth_mib:.1f} MiB during a 50 MB upload"
    assert made.bytes == len(data)
    assert made.model_extra and made.model_extra["sha256"] == hashlib.sha256(data).hexdigest()
    with httpx.stream(
        "GET", f"{server.url}/v1/files/{made.id}/content", headers=bearer(keys["a"]), timeout=60
    ) as response:
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(len(data))
        digest = hashlib.sha256()
        for chunk in response.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    a.files.delete(made.id)


def test_over_the_size_limit_is_413_and_leaves_nothing(
    server: Server, keys: dict[str, str], db: Path
) -> None:
    a = sdk(server, keys["a"])
    before = stored_files(db, "acme")
    with pytest.raises(openai.APIStatusError) as caught:
        a.files.create(file=("huge.bin", b"x" * (LIMIT + 1)), purpose="user_data")
    assert caught.value.status_code == 413
    assert f"{LIMIT}-byte limit" in caught.value.message
    assert "GENSPOOL_MAX_FILE_BYTES" in caught.value.message

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="h.bin"\r\n\r\n'
        for _ in range(LIMIT // MiB + 2):
            yield b"y" * MiB
        yield b"\r\n--b--\r\n"

    response = httpx.post(
        f"{server.url}/v1/files",
        content=chunked(),
        headers={**bearer(keys["a"]), "Content-Type": "multipart/form-data; boundary=b"},
        timeout=60,
    )
    message = assert_error(response, 413, "payload_too_large")
    assert f"{LIMIT}-byte limit" in message
    assert stored_files(db, "acme") == before  # no blob, no part file
    assert not {"huge.bin", "h.bin"} & {f.filename for f in a.files.list()}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"purpose": "fine-tuning"}, "purpose"),
        ({"purpose": "batch_output"}, "purpose"),  # genspool writes those; nobody uploads them
        ({}, "purpose"),
        ({"purpose": "batch", "expires_after[anchor]": "created_at",
          "expires_after[seconds]": "59"}, "expires_after[seconds]"),
        ({"purpose": "batch", "expires_after[anchor]": "last_active_at",
          "expires_after[seconds]": "3600"}, "expires_after[anchor]"),
        ({"purpose": "batch", "colour": "blue"}, "colour"),
    ],
)  # fmt: skip
def test_bad_fields_are_400_naming_them(
    server: Server, keys: dict[str, str], fields: dict[str, str], param: str
) -> None:
    response = httpx.post(
        f"{server.url}/v1/files",
        data=fields,
        files={"file": ("f.jsonl", b"{}\n")},
        headers=bearer(keys["a"]),
    )
    message = assert_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["param"] == param, message
    if param == "purpose" and fields:
        assert "batch, " in message and "user_data" in message  # the allowed ones, named


def test_expires_after_is_honoured_and_missing_file_refused(
    server: Server, keys: dict[str, str]
) -> None:
    a = sdk(server, keys["a"])
    made = a.files.create(
        file=("e.txt", b"soon"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert made.expires_at == made.created_at + 3600
    response = httpx.post(
        f"{server.url}/v1/files", data={"purpose": "batch"}, headers=bearer(keys["a"])
    )
    assert_error(response, 400)
    no_form = httpx.post(
        f"{server.url}/v1/files", json={"purpose": "batch"}, headers=bearer(keys["a"])
    )
    assert "multipart/form-data" in assert_error(no_form, 400, "invalid_request_error")


async def test_expired_files_are_404_then_purged_in_process() -> None:
    """Expiry on the deployment's clock, here a fake one: the file is gone from every route at
    its ``expires_at``, and the purge deletes its record and bytes."""
    clock = FakeClock()
    async with serve(MODELS, clock=clock) as gs:
        key = (await gs.services.keys.create("acme", [Scope.SUBMIT, Scope.READ]))[1]
        client, auth = gs.client, bearer(key)
        form = {"purpose": "user_data", "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "3600"}  # fmt: skip
        made = await client.post(
            "/v1/files", data=form, files={"file": ("a.txt", b"abc")}, headers=auth
        )
        assert made.status_code == 200, made.text
        file_id = made.json()["id"]
        assert (await client.get(f"/v1/files/{file_id}/content", headers=auth)).content == b"abc"
        clock.advance(3600)
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
            assert_error(await client.get(path, headers=auth), 404, "not_found")
        assert_error(await client.delete(f"/v1/files/{file_id}", headers=auth), 404)
        assert (await client.get("/v1/files", headers=auth)).json()["data"] == []
        files = gs.services.files
        assert files is not None and await files.purge_expired() == 1
        assert await files.store.file_get(file_id, None) is None


def test_uploads_are_not_bound_by_the_body_limit(server: Server, keys: dict[str, str]) -> None:
    """GENSPOOL_MAX_BODY_BYTES is 1 MiB here: uploads have their own limit, other routes not."""
    a = sdk(server, keys["a"])
    made = a.files.create(file=("two.bin", b"z" * (2 * MiB)), purpose="user_data")
    assert made.bytes == 2 * MiB
    big_job = {"url": "/v1/chat/completions", "body": {"model": "echo", "x": "z" * (2 * MiB)}}
    response = httpx.post(f"{server.url}/v1/jobs", json=big_job, headers=bearer(keys["a"]))
    assert_error(response, 413, "payload_too_large")


async def test_a_redis_server_alone_answers_501_naming_the_store_to_add(
    namespaced_url: Callable[[str], str],
) -> None:
    """Redis keeps no files (no FileStore there): each files route says what to run instead,
    and the rest of the API works as before."""
    async with serve(MODELS, url=namespaced_url("redis")) as gs:
        try:
            form = {"data": {"purpose": "batch"}, "files": {"file": ("a.txt", b"a")}}
            for response in (
                await gs.client.post("/v1/files", **form),  # type: ignore[arg-type]
                await gs.client.get("/v1/files"),
                await gs.client.get("/v1/files/file-1/content"),
            ):
                message = assert_error(response, 501, "files_unavailable")
                assert "GENSPOOL_DATABASE_URL=postgresql://" in message
            assert (await gs.client.get("/v1/jobs")).status_code == 200
        finally:
            await gs.queue.storage.drop()
