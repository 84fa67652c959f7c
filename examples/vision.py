"""Image input: the upstream MiniMax-M3 tutorial's vision example, with a data URL.

The tutorial points at a remote picture; this one sends a solid red PNG (made here with the
standard library) as a ``data:`` URL, so it needs no internet and has a checkable answer.

    export OPENAI_BASE_URL=http://<host>:8000/v1 OPENAI_API_KEY=<key>   # see README: "Try it"
    python examples/vision.py

Exits 1 unless the description names the colour (red / 红).
"""
import base64
import os
import struct
import sys
import zlib

from openai import OpenAI

# OPENAI_BASE_URL / OPENAI_API_KEY (the SDK's own variables); a private CA for an https endpoint:
# SSL_CERT_FILE=/path/to/ca.pem (read by httpx, under the SDK). OPENAI_MODEL: the served name.
client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
)


def solid_png(rgb, size=64):
    """A size x size PNG of one colour."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = (b"\x00" + bytes(rgb) * size) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


image_url = "data:image/png;base64," + base64.b64encode(solid_png((220, 20, 20))).decode()

response = client.chat.completions.create(
    model=os.environ.get("OPENAI_MODEL", "MiniMax-M3"),
    messages=[
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "请描述这张图片中的内容。"},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        }
    ],
    max_tokens=4096,
)
answer = response.choices[0].message.content or ""
print(answer)

description = answer.split("think>")[-1]
if "red" not in description.lower() and "红" not in description:
    sys.exit("error: the description does not name the image's colour (red)")
