"""Tool calling: the upstream MiniMax-M3 tutorial's get_weather example, asked in Chinese.

    export OPENAI_BASE_URL=http://<host>:8000/v1 OPENAI_API_KEY=<key>   # see README: "Try it"
    python examples/tool_calling.py

Exits 1 unless the model calls get_weather for Beijing (北京) in celsius.
"""
import json
import os
import sys

from openai import OpenAI

# OPENAI_BASE_URL / OPENAI_API_KEY (the SDK's own variables); a private CA for an https endpoint:
# SSL_CERT_FILE=/path/to/ca.pem (read by httpx, under the SDK). OPENAI_MODEL: the served name.
client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
)


def get_weather(location: str, unit: str):
    return f"Getting the weather for {location} in {unit}..."


tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and state, e.g., 'San Francisco, CA'"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}]

response = client.chat.completions.create(
    model=os.environ.get("OPENAI_MODEL", "MiniMax-M3"),
    messages=[{"role": "user", "content": "北京今天天气怎么样？请用摄氏度。"}],
    tools=tools,
    tool_choice="auto",
)

message = response.choices[0].message
if not message.tool_calls:
    sys.exit(f"error: no tool call; the model answered {message.content!r}")
tool_call = message.tool_calls[0].function
print(f"Function called: {tool_call.name}")
print(f"Arguments: {tool_call.arguments}")
args = json.loads(tool_call.arguments)
print(f"Result: {get_weather(**args)}")

location = str(args.get("location", ""))
if tool_call.name != "get_weather" or args.get("unit") != "celsius" or not (
    "北京" in location or "beijing" in location.lower()
):
    sys.exit(f"error: want get_weather for Beijing in celsius, got {tool_call.name}({tool_call.arguments})")
