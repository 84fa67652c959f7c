"""The client of ``sgl-deploy probe``: the second link of the probe chain (see ``probe_checks``).

:class:`ProbeClient` wraps one endpoint: plain httpx for ``/health``, ``/v1/models``,
``/model_info`` and the auth checks, the OpenAI Python SDK for chat (non-streamed and streamed,
timed), first contact (:class:`Unreachable`, exit 3), model and parser discovery, the API key
scrubbed from every text, and the run loop that turns the probes of a suite into the report.
Suites (``probe_m3``, ``probe_default``, ``recipe_suite``) are composed over a client; this module
knows none of them.

Rules: never call ``/server_info`` (SGLang echoes the API key there), never print the key.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Callable

from sgl_deploy import report
from sgl_deploy.errors import SglDeployError
from sgl_deploy.probe_checks import (
    ACCURACY_THRESHOLD,
    ProbeResult,
    RequestSample,
    StreamCapture,
    normalize_base_url,
)


class Unreachable(SglDeployError):
    """The endpoint could not be contacted at all (exit 3)."""


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    return obj.model_dump()


# --------------------------------------------------------------------------- runner


class ProbeClient:
    """One endpoint's client and the options of a probe run. A runner (``probe_default.ProbeRunner``,
    ``recipe_suite.RecipeRunner``) is a client that names its probes in :meth:`probes`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        reasoning_parser: str | None = None,
        tool_call_parser: str | None = None,
        vision: str = "auto",
        image_url: str | None = None,
        concurrency: int = 8,
        max_tokens: int = 1024,
        bench_python: str | None = None,
        bench_num_prompts: int = 16,
        bench_tokenizer: str | None = None,
        log: Callable[[str], None] | None = None,
        router: bool = False,
        accuracy_threshold: float = ACCURACY_THRESHOLD,
        ca_file: str | None = None,
    ):
        # The server root: the OpenAI SDK form (.../v1) is accepted and normalised.
        self.base_url = normalize_base_url(base_url)
        self.accuracy_threshold = accuracy_threshold
        # Target is the gateway (smg, or an old sglang-router): it serves /v1/models without
        # checking the key (upstream behaviour), so the auth probe checks the generation endpoints only there.
        self.router = router
        # https: verify the server against this CA bundle (a private CA); None: the system store.
        self.ca_file = ca_file
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self.cli_parsers = {"reasoning_parser": reasoning_parser, "tool_call_parser": tool_call_parser}
        self.vision = vision
        self.image_url = image_url
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.bench_python = bench_python
        self.bench_num_prompts = bench_num_prompts
        self.bench_tokenizer = bench_tokenizer
        self.log = log or (lambda _msg: None)
        self.samples: list[RequestSample] = []
        self._samples_lock = threading.Lock()
        self._t0 = time.monotonic()
        self.models_json: dict | None = None
        self.models_latency_s: float | None = None
        self.models_error: str | None = None
        self.model_info: dict | None = None
        self.health_status: int | None = None
        self._http = None
        self._client = None
        # Requests retried once after a connection-level error (a stale keep-alive connection
        # that the server closed after an error response). Reported, never hidden.
        self.retries: list[str] = []

    # ---- plumbing

    def scrub(self, text: str) -> str:
        text = str(text)
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text

    def auth_headers(self, key: str | None = "default") -> dict:
        key = self.api_key if key == "default" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def http(self):
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self._httpx_timeout(), follow_redirects=False,
                                      verify=self._verify())
        return self._http

    def _verify(self):
        """httpx's verify: an SSLContext on the CA bundle, or True (the system store)."""
        if not self.ca_file:
            return True
        import ssl

        return ssl.create_default_context(cafile=self.ca_file)

    def _httpx_timeout(self):
        import httpx

        return httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))

    @property
    def client(self):
        if self._client is None:
            import openai

            extra = {}
            if self.ca_file:  # the SDK's own client otherwise (its connection limits and defaults)
                extra["http_client"] = openai.DefaultHttpxClient(timeout=self._httpx_timeout(), verify=self._verify())
            self._client = openai.OpenAI(
                base_url=f"{self.base_url}/v1",
                api_key=self.api_key or "EMPTY",
                timeout=self._httpx_timeout(),
                max_retries=0,
                **extra,
            )
        return self._client

    def close(self) -> None:
        for obj in (self._client, self._http):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # pragma: no cover
                pass

    def record(self, probe: str, start: float, latency: float, ok: bool) -> None:
        with self._samples_lock:
            self.samples.append(RequestSample(probe, start - self._t0, latency, ok))

    def request_safe(self, label: str, method: str, path: str, key: str | None = "default", **kwargs):
        """An HTTP request that is safe to repeat (a GET, or an auth check that must be refused).

        Servers may close a keep-alive connection after an error response (a 401 sent without
        draining the request body), so the next request on that connection fails with a
        connection-level error before any response. Such a request is retried once, on a new
        connection, and the retry is recorded (``self.retries``) for the report. A timeout is not
        retried (a hang is a real failure), and nothing is retried twice.
        """
        import httpx

        url = self.base_url + path
        headers = {**self.auth_headers(key), **kwargs.pop("headers", {})}
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError) as exc:
            self.retries.append(f"{label}: {type(exc).__name__}: {exc}")
            self.log(f"retrying {label} once on a new connection after {type(exc).__name__}")
            return self.http.request(method, url, headers={**headers, "Connection": "close"}, **kwargs)

    def get(self, path: str, key: str | None = "default"):
        return self.request_safe(f"GET {path}", "GET", path, key=key)

    def chat(self, probe: str, as_sent: bool = False, **kwargs) -> tuple[dict, float]:
        """A non-streamed chat completion through the OpenAI SDK -> (response dict, latency). With
        ``as_sent`` the request goes exactly as given (the recipe suite's tutorial requests), else the
        model and max_tokens default to the runner's."""
        if not as_sent:
            kwargs.setdefault("model", self.model)
            kwargs.setdefault("max_tokens", self.max_tokens)
        client = self.client  # created (openai imported) outside the timed section
        start = time.monotonic()
        ok = False
        try:
            response = client.chat.completions.create(**kwargs)
            ok = True
            return response.model_dump(), time.monotonic() - start
        finally:
            self.record(probe, start, time.monotonic() - start, ok)

    def stream(self, probe: str, as_sent: bool = False, **kwargs) -> StreamCapture:
        """A streamed chat completion; never hangs longer than the timeout between chunks. With
        ``as_sent`` the request goes exactly as given (the recipe suite sends the tutorial's request,
        ``stream`` included, without stream_options), else with the runner's model and max_tokens and
        usage requested."""
        if not as_sent:
            kwargs.setdefault("model", self.model)
            kwargs.setdefault("max_tokens", self.max_tokens)
            kwargs = {"stream": True, "stream_options": {"include_usage": True}, **kwargs}
        capture = StreamCapture()
        client = self.client
        start = time.monotonic()
        try:
            stream = client.chat.completions.create(**kwargs)
            with stream:
                for chunk in stream:
                    now = time.monotonic() - start
                    if now > self.timeout * 4:
                        raise TimeoutError(f"stream still running after {now:.0f}s")
                    data = chunk.model_dump()
                    if data.get("usage"):
                        capture.usage = data["usage"]
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        reasoning = delta.get("reasoning_content")
                        content = delta.get("content")
                        for kind, text in (("reasoning", reasoning), ("content", content)):
                            if text:
                                capture.pieces.append((now, kind, text))
                                if kind == "content":
                                    capture.content += text
                                else:
                                    capture.reasoning += text
                        for entry in delta.get("tool_calls") or []:
                            capture.tool_deltas.append(_as_dict(entry))
                        if (reasoning or content or delta.get("tool_calls")) and capture.ttft_s is None:
                            capture.ttft_s = now
                        if reasoning or content or delta.get("tool_calls"):
                            capture.first_s = capture.first_s if capture.first_s is not None else now
                            capture.last_s = now
                        if choice.get("finish_reason"):
                            capture.finish_reason = choice["finish_reason"]
        except Exception as exc:  # timeouts, connection drops, HTTP errors
            capture.error = self.scrub(f"stream failed after {time.monotonic() - start:.1f}s: "
                                       f"{type(exc).__name__}: {exc}")
        capture.total_s = time.monotonic() - start
        self.record(probe, start, capture.total_s, capture.error is None)
        return capture

    # ---- discovery

    def contact(self) -> None:
        """First contact (``GET /health``, no auth). Raises Unreachable on connection errors."""
        import httpx

        try:
            response = self.get("/health", key=None)
        except (httpx.TransportError, httpx.InvalidURL) as exc:  # refused, DNS, timeout, not HTTP
            raise Unreachable(f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        self.health_status = response.status_code

    def discover(self) -> None:
        import httpx

        try:
            start = time.monotonic()
            response = self.get("/v1/models")
            self.models_latency_s = time.monotonic() - start
            if response.status_code == 200:
                self.models_json = response.json()
            else:
                self.models_error = f"/v1/models answered HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            self.models_error = f"/v1/models failed: {type(exc).__name__}: {exc}"
        for path in ("/model_info", "/get_model_info"):  # the router only has the old name
            try:
                response = self.get(path)
            except httpx.HTTPError:
                break
            if response.status_code == 200:
                try:
                    self.model_info = response.json()
                except ValueError:
                    pass
                break
            if response.status_code != 404:
                break
        if not self.model and self.models_json:
            ids = [m.get("id") for m in self.models_json.get("data") or []]
            self.model = ids[0] if ids else None

    def parser(self, kind: str) -> tuple[str | None, str]:
        """(parser name, source) for ``reasoning_parser`` / ``tool_call_parser``."""
        if self.cli_parsers.get(kind):
            return self.cli_parsers[kind], "command line"
        if self.model_info is not None and kind in self.model_info:
            return self.model_info.get(kind), "/model_info"
        return None, "unknown"

    # ---- the run

    def probes(self) -> dict[str, Callable[[], ProbeResult]]:
        """The probe functions by name (the runners compose their suites here)."""
        return {}

    def run(self, selected: list[str]) -> dict:
        started = datetime.now(timezone.utc)
        t0 = time.monotonic()
        results: list[ProbeResult] = []
        try:
            self.contact()
            self.discover()
            for name in selected:
                self.log(f"probe {name} ...")
                if name != "models" and name != "auth" and not self.model:
                    results.append(ProbeResult(name, "fail", detail="model name unknown (/v1/models failed; pass --model)"))
                    continue
                try:
                    result = self.probes()[name]()
                except Exception as exc:  # a probe must never take the run down
                    result = ProbeResult(name, "fail", detail=f"{type(exc).__name__}: {exc}")
                result.detail = self.scrub(result.detail)
                results.append(result)
        finally:
            self.close()
        return report.build_report(
            base_url=self.base_url, model=self.model, started_at=started,
            duration_s=time.monotonic() - t0, probes=[r.to_dict() for r in results],
            requests=[asdict(s) for s in self.samples], retries=[self.scrub(r) for r in self.retries],
            # no key, and the endpoint answered: it serves without authentication
            unauthenticated=not self.api_key and any(r.status == "pass" for r in results),
        )

