"""Where class sessions live (the contract: app/classroom/store/base.py): this process's memory, or Redis when
DEEPDIVE_REDIS_URL is set so several server processes share one class."""

from __future__ import annotations

from app.classroom.store.base import Store
from app.classroom.store.memory import MemoryStore
from app.config import Settings


def make_store(settings: Settings) -> Store:
    """The store the settings ask for: Redis when DEEPDIVE_REDIS_URL is set, else this process's memory."""
    limits = {"ttl_s": settings.class_ttl_s, "max_sessions": settings.max_class_sessions,
              "max_students": settings.max_class_students}
    if settings.redis_url:
        from app.classroom.store.redis import RedisStore  # only a server configured for Redis needs the client

        return RedisStore(settings.redis_url, **limits, timeout_s=settings.redis_timeout_s,
                          retries=settings.redis_retries)
    return MemoryStore(**limits)
