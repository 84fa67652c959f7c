"""Streaming: the upstream MiniMax-M3 tutorial's streaming example, printed chunk by chunk.

    export OPENAI_BASE_URL=http://<host>:8000/v1 OPENAI_API_KEY=<key>   # see README: "Try it"
    python examples/streaming.py

Exits 1 when the answer is empty or did not arrive in several chunks.
"""
import os
import sys

from openai import OpenAI

# OPENAI_BASE_URL / OPENAI_API_KEY (the SDK's own variables); a private CA for an https endpoint:
# SSL_CERT_FILE=/path/to/ca.pem (read by httpx, under the SDK). OPENAI_MODEL: the served name.
client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
)

stream = client.chat.completions.create(
    model=os.environ.get("OPENAI_MODEL", "MiniMax-M3"),
    messages=[{"role": "user", "content": "请用 Python 实现一个二叉搜索树，包含插入、查找和删除操作。"}],
    stream=True,
    max_tokens=32768,
    temperature=1.0,
    top_p=0.95,
)

chunks, text = 0, ""
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    if delta and delta.content:
        print(delta.content, end="", flush=True)
        chunks += 1
        text += delta.content
print()

if chunks < 2 or not text.split("think>")[-1].strip():
    sys.exit(f"error: {chunks} content chunk(s), answer {text[-80:]!r}")
