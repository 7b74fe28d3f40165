"""Requests to one OpenAI-compatible server: the official `openai` client, a rate cap, a bounded number
of requests in flight, and every response cached in the store by a hash of its request.

The client times requests out and retries 429, 5xx, timeouts and connection errors with exponential
backoff, honouring Retry-After (up to `max_retries`); here we count its retries and add what it does
not do: a response that is not JSON or has no choices is asked again (BAD_RESPONSE_RETRIES times),
then the request fails. Only greedy requests (temperature 0) reach the server, so a cached answer is
the answer: a killed run resumes without paying twice, and latency is the one measured when it was
paid. The API key is read from the environment when the client is built and is kept out of every
message and stored value.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tunewise.config import ModelConfig
from tunewise.errors import ConfigError
from tunewise.store import Store, make_key

BAD_RESPONSE_RETRIES = 1
CACHE_KIND = "http"
NO_KEY = "not-needed"  # local servers take any key; the client refuses an empty one


class EndpointError(RuntimeError):
    """A request that failed for good (after retries); ends the candidate as failed."""


@dataclass
class Reply:
    data: dict  # the response body
    seconds: float  # wall time of the request, retries included (the cached value keeps the paid one)
    retries: int
    cached: bool = False


class RateLimit:
    """At most `per_second` request starts a second, shared by every thread."""

    def __init__(self, per_second: float | None):
        self.gap = 1.0 / per_second if per_second else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.gap:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.gap
        time.sleep(start - now)


def api_key(name: str, cfg: ModelConfig) -> str:
    if cfg.api_key_env is None:
        return NO_KEY
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ConfigError(f"model '{name}': environment variable {cfg.api_key_env} (api_key_env) is not set",
                          fix=f"export {cfg.api_key_env}=<your key> before running")
    return key


def check_prompt_models(specs: list[str], models: dict[str, ModelConfig]) -> None:
    """Fail early (one line, exit 2) on a --prompt-model that cannot be resolved or lacks its key."""
    from tunewise.config import model_config

    for spec in specs:
        name, cfg = model_config(spec, models)
        if cfg.is_http:
            parts = urlsplit(cfg.base_url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"model '{name}': base_url '{public_url(cfg.base_url or '')}' is not an http(s) URL",
                                  fix="e.g. http://127.0.0.1:8000/v1")
            api_key(name, cfg)


def public_url(url: str) -> str:
    """The URL without any user:password part, for messages and cache keys."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class Endpoint:
    """One server and model: `send_all` runs requests concurrently, from the cache where it can."""

    def __init__(self, name: str, cfg: ModelConfig, store: Store | None):
        import openai

        self.name, self.cfg, self.store = name, cfg, store
        self.url = public_url(cfg.base_url or "")
        self._secret = api_key(name, cfg)
        self._attempts = threading.local()  # requests sent by this thread's current call, retries included
        http = openai.DefaultHttpxClient(event_hooks={"request": [self._count_attempt]})
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=self._secret, timeout=cfg.timeout_s,
                                    max_retries=cfg.max_retries, http_client=http)
        self.limit = RateLimit(cfg.requests_per_second)

    def _count_attempt(self, request) -> None:
        self._attempts.n = getattr(self._attempts, "n", 0) + 1

    # -- many requests ---------------------------------------------------------------------
    def send_all(self, jobs: list[tuple[str, dict]]) -> list[Reply]:
        """One reply per (route, body), in order; `cfg.concurrency` in flight. The store is only used
        from this (the calling) thread: SQLite connections do not cross threads."""
        out: list[Reply | None] = [None] * len(jobs)
        todo = []
        for i, job in enumerate(jobs):
            hit = self.store.get(CACHE_KIND, self._key(*job)) if self.store is not None else None
            if hit is not None:
                out[i] = Reply(hit["data"], hit["seconds"], 0, cached=True)
            else:
                todo.append(i)
        if len(todo) <= 1 or self.cfg.concurrency == 1:
            for i in todo:
                out[i] = self._keep(jobs[i], self.send(*jobs[i]))
            return out  # type: ignore[return-value]
        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="tunewise-http")
        try:
            futures = {pool.submit(self.send, *jobs[i]): i for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                out[i] = self._keep(jobs[i], future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return out  # type: ignore[return-value]

    def _key(self, route: str, body: dict) -> str:
        return make_key(CACHE_KIND, self.url, route, body)

    def _keep(self, job: tuple[str, dict], reply: Reply) -> Reply:
        route, body = job
        if self.store is not None and body.get("temperature") == 0:  # never cache a sampled answer
            self.store.put(CACHE_KIND, self._key(route, body), {"data": reply.data, "seconds": reply.seconds})
        return reply

    # -- one request -----------------------------------------------------------------------
    def send(self, route: str, body: dict) -> Reply:
        """POST one request (`route`: completions or chat); raises EndpointError when it fails for good."""
        import openai

        create = (self.client.completions if route == "completions" else self.client.chat.completions).create
        self._attempts.n = 0
        problem = ""
        self.limit.wait()
        start = time.perf_counter()
        for _ in range(BAD_RESPONSE_RETRIES + 1):
            try:
                data = create(**body).model_dump()
            except openai.APIStatusError as exc:
                raise EndpointError(self._say(f"HTTP {exc.status_code} {_first_line(exc.message)}")) from None
            except openai.APITimeoutError:
                raise EndpointError(self._say(f"timed out after {self.cfg.timeout_s:g} s")) from None
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                raise EndpointError(self._say(f"cannot connect ({type(cause).__name__})")) from None
            except ValueError:  # the body is not JSON, or not the shape of a response
                problem = "a response that is not valid JSON"
                continue
            if data.get("choices"):
                return Reply(data, time.perf_counter() - start, self._attempts.n - 1)
            problem = "a response with no choices"
        raise EndpointError(self._say(problem))

    def _say(self, what: str) -> str:
        retries = self._attempts.n - 1
        text = f"{self.url} ({self.cfg.model}): {what}" + (f" after {retries} retries" if retries > 0 else "")
        return self.redact(text)

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret != NO_KEY else text


def _first_line(text: str) -> str:
    line = (text or "").strip().splitlines()
    return line[0][:200] if line else ""
