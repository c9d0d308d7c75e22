"""The baseline of ``bench/submit_latency.py``: the least a FastAPI service can do for a submit.

``POST /v1/jobs`` validates the body with pydantic, inserts one row into SQLite (WAL,
``synchronous=NORMAL``, genspool's defaults) and commits it before answering, on the event
loop itself (no thread hop), and answers the id. No auth, no events, no worker.

    uvicorn --app-dir bench _bare:app --port N        (DB: $BARE_DB, default ./bare.db)
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

db = sqlite3.connect(os.environ.get("BARE_DB", "bare.db"), isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = NORMAL")
db.execute(
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, url TEXT, body TEXT, "
    "status TEXT, created_at REAL)"
)
app = FastAPI()


class JobIn(BaseModel):
    url: str
    body: dict[str, Any]


@app.post("/v1/jobs", status_code=202)
async def submit(job: JobIn) -> dict[str, Any]:
    job_id = f"job_{uuid.uuid4().hex}"
    db.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, 'queued', ?)",
        (job_id, job.url, job.model_dump_json(), time.time()),
    )
    return {"id": job_id, "status": "queued"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
