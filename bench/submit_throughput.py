"""Submit throughput: Client.submit_many / submit per job against raw Celery send_task on Redis."""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import redis
from PIL import Image

from jobs import migrate
from jobs.broker import analyze_queue, make_celery
from jobs.contracts import ANALYZE_TASK, queue_for
from jobs.settings import Settings
from producers import Client, SubmitItem


def photos(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, 7)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def per_job_ms(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e3:7.2f} ms/job  ({n / seconds:7.0f} jobs/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    # Database 15: the test fixtures use 1-14, and this run flushes its database first.
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--database", default="", help="default: a fresh SQLite file")
    args = parser.parse_args()
    n = args.jobs
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        settings = Settings(data_dir=Path(tmp), database_url=url, broker_url=args.redis)
        redis.Redis.from_url(args.redis).flushdb()
        images = photos(2 * n)

        app = make_celery(settings, "bench")
        kwargs = {"job_id": "x", "advisor": "ansel", "variant": "base", "image_ref": "sha256:0"}
        with app.producer_or_acquire() as producer:
            started = time.perf_counter()
            for _ in range(n):
                app.send_task(ANALYZE_TASK, kwargs=kwargs, queue=analyze_queue("base"),
                              routing_key=queue_for("base"), producer=producer)  # fmt: skip
            raw = time.perf_counter() - started
        app.close()

        with Client(settings) as client:
            client.submit(images[-1], "ansel")  # warm: engine, broker pool, personas
            started = time.perf_counter()
            client.submit_many([SubmitItem(img, "ansel") for img in images[:n]])
            batch = time.perf_counter() - started
            started = time.perf_counter()
            for img in images[n : n + n // 4]:
                client.submit(img, "ansel")
            single = time.perf_counter() - started
        depth = redis.Redis.from_url(args.redis).llen(queue_for("base"))
        print(f"database {url.split(':')[0]}, broker Redis, {n} jobs ({depth} messages queued)")
        print(f"raw send_task         {per_job_ms(raw, n)}")
        print(f"Client.submit_many    {per_job_ms(batch, n)}")
        print(f"Client.submit (1 by 1) {per_job_ms(single, n // 4)}")


if __name__ == "__main__":
    main()
