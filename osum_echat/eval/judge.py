"""A judge: any OpenAI-compatible chat endpoint, called through the official `openai` SDK.

    judge = Judge(JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="gpt-4o"), cache_path)
    answers = judge.ask_all([(cache_key_parts, messages), ...])   # {request id: reply text}

- temperature 0 and a fixed seed by default; the model name goes into the report;
- retries with exponential back-off on 429, 5xx, timeouts and refused connections (the SDK's own
  retries are off so that every attempt is counted here);
- at most `concurrency` requests in flight;
- an on-disk cache keyed by (judge model, messages, item): one JSON line per answer, appended and
  flushed as soon as it arrives, so a rerun (or a run killed with -9 and started again) asks only
  what is not in the file, and a fully cached run never opens a connection;
- when the endpoint cannot be reached after the retries, `JudgeUnavailable` (one line saying
  where and what) is raised; answers already received stay in the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from osum_echat.progress import Progress
from osum_echat.utils import get_logger

log = get_logger("osum_echat.eval")

DEFAULT_SEED = 1337  # SD-Eval's seed; any fixed seed makes reruns comparable
API_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "EMPTY"  # local endpoints (vLLM, bin.serve) take any key


class JudgeUnavailable(RuntimeError):
    """The judge endpoint could not be reached, kept failing after every retry, or refuses the
    client itself (401, 403, 404: key, permission, model name)."""


class JudgeRefusedItem(RuntimeError):
    """The endpoint refused one request (400, 413, 422 ...): that item is invalid, the run goes on."""


FATAL_STATUS = (401, 403, 404)  # the client's key, rights or model name: every request would fail


@dataclass
class JudgeConfig:
    base_url: str
    model: str
    api_key_env: str = API_KEY_ENV
    temperature: float = 0.0
    seed: int = DEFAULT_SEED
    max_tokens: int | None = None
    concurrency: int = 4
    retries: int = 4  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    timeout: float = 120.0


@dataclass
class JudgeStats:
    calls: int = 0  # requests that got an answer
    cache_hits: int = 0
    retries: int = 0
    errors: dict = field(default_factory=dict)  # error kind -> count (answers that never came)

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "retries": self.retries,
                "errors": dict(sorted(self.errors.items()))}


def cache_key(model: str, messages: list, item: str) -> str:
    blob = json.dumps([model, messages, item], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """key -> answer, one JSON line each; a line cut by a killed run is ignored (asked again)."""

    def __init__(self, path: str):
        self.path = path
        self.answers = {}
        self._lock = threading.Lock()
        if os.path.exists(path):
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    def get(self, key: str):
        return self.answers.get(key)

    def put(self, key: str, answer: str, meta: dict) -> None:
        with self._lock:
            self.answers[key] = answer
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "answer": answer, **meta}, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())


def _is_retryable(error) -> tuple[bool, str]:
    """(retry?, kind) for an exception raised by the SDK."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return True, "timeout"
    if isinstance(error, openai.APIConnectionError):
        return True, "connection"
    if isinstance(error, openai.RateLimitError):
        return True, "429"
    if isinstance(error, openai.APIStatusError):
        code = error.status_code
        return code >= 500, str(code)
    return False, type(error).__name__


class Judge:
    def __init__(self, config: JudgeConfig, cache_path: str, *, quiet: bool = False):
        self.config = config
        self.cache = JudgeCache(cache_path)
        self.stats = JudgeStats()
        self.quiet = quiet
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        if self._client is None:  # only built when something is not cached
            import openai

            key = os.environ.get(self.config.api_key_env) or NO_KEY
            self._client = openai.OpenAI(base_url=self.config.base_url, api_key=key, max_retries=0,
                                         timeout=self.config.timeout)
        return self._client

    def _request(self, messages: list) -> str:
        kw = dict(model=self.config.model, messages=messages, temperature=self.config.temperature,
                  seed=self.config.seed)
        if self.config.max_tokens:
            kw["max_tokens"] = self.config.max_tokens
        delay, last = self.config.backoff, None
        for attempt in range(self.config.retries + 1):
            if attempt:
                with self._lock:
                    self.stats.retries += 1
                time.sleep(delay)
                delay *= 2
            try:
                reply = self.client().chat.completions.create(**kw)
                content = reply.choices[0].message.content if reply.choices else None
                return content or ""
            except Exception as e:  # noqa: BLE001 - sorted into retry / give up below
                retry, kind = _is_retryable(e)
                last = (kind, e)
                if not retry:
                    break
        kind, e = last
        with self._lock:
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        if kind.isdigit() and 400 <= int(kind) < 500 and int(kind) not in FATAL_STATUS and kind != "429":
            raise JudgeRefusedItem(f"{kind}: {str(e)[:200]}")
        raise JudgeUnavailable(f"judge {self.config.model} at {self.config.base_url}: {kind} "
                               f"({type(e).__name__}: {str(e)[:200]}) after {self.config.retries + 1} attempts")

    def ask_all(self, requests: list) -> dict:
        """requests: (request id, item id, messages). Returns {request id: answer}; cached answers
        are taken from the cache, the rest asked (at most `concurrency` at a time) and cached. A
        request the endpoint refuses (400 ...) gets None (scored invalid; not cached, so asked again
        next run); an unreachable or unauthorised endpoint raises JudgeUnavailable."""
        answers, todo = {}, []
        for rid, item, messages in requests:
            key = cache_key(self.config.model, messages, item)
            hit = self.cache.get(key)
            if hit is not None:
                answers[rid] = hit
                self.stats.cache_hits += 1
            else:
                todo.append((rid, item, key, messages))
        if not todo:
            return answers
        bar = Progress(total=len(todo), desc="judge", unit="req", echo=not self.quiet)
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            futures = {pool.submit(self._request, messages): (rid, item, key)
                       for rid, item, key, messages in todo}
            try:
                for fut in as_completed(futures):
                    rid, item, key = futures[fut]
                    try:
                        answer = fut.result()
                    except JudgeRefusedItem as e:
                        log.warning(f"judge refused {item}: {e}; scored invalid")
                        answers[rid] = None
                        bar.update(1, failed=1)
                        continue
                    self.cache.put(key, answer, {"model": self.config.model, "item": item})
                    answers[rid] = answer
                    with self._lock:
                        self.stats.calls += 1
                    bar.update(1)
            except JudgeUnavailable:
                for f in futures:
                    f.cancel()
                raise
            finally:
                if not self.quiet:
                    bar.close()
        return answers
