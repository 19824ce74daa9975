"""Boot: build one worker process's runtime once and hand it to the Celery task.

Imports MLX (through the provider): import this module only after OpenBLAS is loaded.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from celery import Celery

from advisor_worker import broker_guard, prompts
from advisor_worker.batching import BatchScheduler
from advisor_worker.celery_app import app, register_analyze
from advisor_worker.control import restrict_remote_control
from advisor_worker.heartbeat import Heartbeat
from advisor_worker.notices import NoticeThread
from advisor_worker.provider import LoadedVariant, ModelProvider
from advisor_worker.runtime import WorkerRuntime
from advisor_worker.scope import Scope
from advisor_worker.shadow import ShadowGate
from advisor_worker.slots import MIB
from advisor_worker.watchdog import Watchdog
from jobs.advisors import get_persona, personas
from jobs.analysis import generation_schema
from jobs.contracts import queue_for, shadow_queue_for
from jobs.errors import ConfigError
from jobs.settings import Settings, mask_url
from jobs.variants import Registry
from notices.courier import Courier
from store.db import engine_for
from store.deliveries import DeliveryStore
from store.repository import Repository

logger = logging.getLogger(__name__)


def provider_for(registry: Registry, variant_name: str, settings: Settings) -> ModelProvider:
    # A bad registry or variant is refused before any model work starts.
    variant = registry.get(variant_name)
    return ModelProvider(
        variant,
        model_image_pixels=settings.model_image_pixels,
        pixels_chosen="model_image_pixels" in settings.model_fields_set,
    )


@dataclass
class Worker:
    """One booted worker process: its runtime, its per-message scope and its threads."""

    settings: Settings
    name: str
    variant: str
    provider: ModelProvider
    runtime: WorkerRuntime
    scope: Scope
    heartbeat: Heartbeat
    watchdog: Watchdog
    notices: NoticeThread
    app: Celery

    def serve(self) -> int:
        """Consume the variant's queue, then its shadow queue, until Celery stops; then close."""
        batch = self.settings.worker_batch
        # The shadow queue comes second: its jobs run only when none of this queue's wait.
        queues = f"{queue_for(self.variant)},{shadow_queue_for(self.variant)}"
        # No prefork: MLX state must not cross a fork, and one process serves one model. B > 1:
        # B threads each hold one unacknowledged message and feed its job to the MLX thread.
        pool = ["--pool=solo"] if batch == 1 else ["--pool=threads", f"--concurrency={batch}"]
        try:
            self.app.worker_main(
                ["worker", *pool, "-Q", queues, "-n", self.name, "-l", self.settings.log_level,
                 "--without-gossip", "--without-mingle", "-E"]
            )  # fmt: skip
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self.watchdog.stop()
        self.notices.stop(timeout=4 * self.settings.webhook_timeout)
        self.heartbeat.stop()
        self.provider.close()


def boot(settings: Settings, registry: Registry, variant_name: str) -> Worker:
    """Load the variant, start the worker's threads and bind the analyze task to them."""
    broker_guard.install()
    repo = Repository(engine_for(settings.resolved_database_url))
    provider = provider_for(registry, variant_name, settings)
    loaded = provider.load(schema=generation_schema(settings.text_limit))
    name = f"{variant_name}-{os.getpid()}@{socket.gethostname()}"
    scheduler = _scheduler(settings, provider)
    _log_start(settings, name, loaded)
    heartbeat = _heartbeat(settings, repo, name, loaded)
    heartbeat.start()
    # Solo and thread pools have no hard limit of their own (it needs a child process).
    watchdog = Watchdog(settings.task_time_limit)
    watchdog.start()
    courier = Courier(settings, DeliveryStore(repo.engine), sender=f"worker {name}")
    notices = NoticeThread(courier)
    notices.start()
    runtime = WorkerRuntime(settings, repo, provider, loaded, name, scheduler)
    # Order matters: a shadow that yields is never armed, tracked or noticed; after hooks
    # run in reverse, so the notices are handed off first, before the heartbeat's writes.
    hooks = [ShadowGate(app, variant_name), watchdog, heartbeat, notices]
    scope = Scope(
        runtime.handle, hooks, soft_limit=float(settings.soft_time_limit),
        hard_limit=settings.task_time_limit, on_error=runtime.failed,
    )  # fmt: skip
    register_analyze(app, scope, on_refused=runtime.record_refused)
    if not settings.worker_remote_control:
        refused = restrict_remote_control()
        logger.info("Remote control: inspection only (%d control commands refused)", len(refused))
    return Worker(settings, name, variant_name, provider, runtime, scope, heartbeat, watchdog,
                  notices, app)  # fmt: skip


def _scheduler(settings: Settings, provider: ModelProvider) -> BatchScheduler:
    """The continuous batch, once the KV caches of B rows are known to fit.

    B=1 too: one decode path and one sampler at every B.
    """
    batch = settings.worker_batch
    plan = provider.plan_slots(
        slots=batch,
        prompts=[(prompts.system_prompt(get_persona(a)), prompts.user_prompt())
                 for a in personas()],
        output_tokens=settings.max_output_tokens,
        memory_mb=settings.worker_memory_mb,
    )  # fmt: skip
    if not plan.fits:
        provider.close()
        raise ConfigError(plan.refusal())
    logger.info(
        "Batching up to %d analyses at once: %.0f MiB of KV cache a row (%d tokens), "
        "budget %.0f MiB (%s)",
        batch, plan.bytes_per_row / MIB, plan.tokens_per_row, plan.budget_bytes / MIB,
        plan.budget_source,
    )  # fmt: skip
    return provider.start_batching(slots=batch, prefill_chunk=settings.prefill_chunk)


def _heartbeat(settings: Settings, repo: Repository, name: str, loaded: LoadedVariant) -> Heartbeat:
    identity = {
        "worker": name,
        "variant": loaded.variant,
        "queue": queue_for(loaded.variant),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "base_model": loaded.base_model,
        "adapter_fingerprint": loaded.adapter_fingerprint,
        "load_seconds": loaded.load_seconds,
    }
    return Heartbeat(
        repo, identity, interval=settings.heartbeat_interval,
        lease_seconds=settings.worker_live_window, slots=settings.worker_batch,
    )  # fmt: skip


def _log_start(settings: Settings, name: str, loaded: LoadedVariant) -> None:
    logger.info(
        "Worker %s serving %s (base %s, adapter %s, batch %d): loaded in %.2fs, warm-up %.2fs; "
        "device=%s dtype=%s blas=%s; broker %s; database %s",
        name, queue_for(loaded.variant), loaded.base_model, loaded.adapter_fingerprint or "none",
        settings.worker_batch, loaded.load_seconds, loaded.warmup_seconds,
        loaded.runtime.get("device"), loaded.runtime.get("dtype"), loaded.runtime.get("blas"),
        mask_url(settings.resolved_broker_url), mask_url(settings.resolved_database_url),
    )  # fmt: skip
