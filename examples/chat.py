"""Chat: the upstream MiniMax-M3 tutorial's first client example, with the recipe's sampling.

    export OPENAI_BASE_URL=http://<host>:8000/v1 OPENAI_API_KEY=<key>   # see README: "Try it"
    python examples/chat.py

Exits 1 when the answer is empty.
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

response = client.chat.completions.create(
    model=os.environ.get("OPENAI_MODEL", "MiniMax-M3"),
    messages=[{"role": "user", "content": "请介绍 MiniMax-M3 相比 M2.5 有哪些提升？"}],
    max_tokens=8192,
    temperature=1.0,
    top_p=0.95,
    extra_body={"top_k": 20},
)

msg = response.choices[0].message
print("MiniMax-M3:", msg.content)

answer = (msg.content or "").split("think>")[-1].strip()  # the text after a thinking block, if any
if not answer:
    sys.exit(f"error: empty answer (finish_reason {response.choices[0].finish_reason})")
