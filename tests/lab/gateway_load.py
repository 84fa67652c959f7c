"""Client load through a gateway for the lab tests (test_redeploy.py, test_gateway.py).

``Client`` sends steady chat requests (OpenAI SDK, no SDK retries, so every error counts), half of
them streamed, from a few threads; ``ok`` holds the finish times of the successful ones, ``errors``
one line per failure. ``longest_gap()`` is the longest time without a successful answer while the
client ran (start to first success, between successes, last success to stop): the client-visible
gap of a gateway restart.
"""

from __future__ import annotations

import ssl
import threading
import time


class Client:
    def __init__(self, base_url: str, key: str, model: str, ca_file: str | None = None, threads: int = 2,
                 max_requests: int = 5000, max_seconds: float = 900, pause: float = 0.05, max_tokens: int = 64):
        import httpx
        from openai import OpenAI

        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.client = OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=60,
                             http_client=httpx.Client(timeout=60, verify=verify))
        self.model, self.pause, self.max_tokens = model, pause, max_tokens
        self.ok: list[float] = []
        self.errors: list[str] = []
        self.started = self.stopped = 0.0
        self.stop = threading.Event()
        self.max_requests, self.deadline = max_requests, time.time() + max_seconds
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True) for i in range(threads)]

    def one(self, i: int, n: int) -> None:
        messages = [{"role": "user", "content": f"What is {i} + {n}? (client {i}, request {n})"}]
        if n % 2:
            stream = self.client.chat.completions.create(model=self.model, messages=messages,
                                                         max_tokens=self.max_tokens, stream=True)
            chunks = sum(1 for _ in stream)
            assert chunks > 0, "empty stream"
        else:
            resp = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=self.max_tokens)
            assert resp.choices and resp.choices[0].message.content, "empty answer"

    def loop(self, i: int) -> None:
        n = 0
        while not self.stop.is_set() and time.time() < self.deadline and len(self.ok) + len(self.errors) < self.max_requests:
            n += 1
            try:
                self.one(i, n)
                self.ok.append(time.time())
            except Exception as exc:  # noqa: BLE001 - every client-visible failure is a finding
                self.errors.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {str(exc)[:300]}")
            time.sleep(self.pause)

    def longest_gap(self) -> float:
        marks = [self.started, *sorted(self.ok), self.stopped or time.time()]
        return max(b - a for a, b in zip(marks, marks[1:]))

    def summary(self) -> str:
        return f"client: {len(self.ok)} ok, {len(self.errors)} errors, longest gap {self.longest_gap():.2f}s"

    def __enter__(self):
        self.started = time.time()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)
        self.stopped = time.time()
