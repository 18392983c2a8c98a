"""An OpenAI-compatible chat-completions server that answers at once, for the gateway benchmark:
the time it adds is the client's and the server's HTTP alone, so a call through the gateway,
Kafka, the router and a worker, less a direct call to this server, is the system's own time.

``python -m benchmarks.instant_backend PORT``: answers ``POST /v1/chat/completions`` with a fixed
answer, streamed in ``PIECES`` server-sent chunks when the request says ``stream: true``.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

ANSWER = "The answer is 391, since 17 times 23 is 391."
PIECES = 8
USAGE = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}


def _chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    doc = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "created": 0,
           "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(doc) + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    model = body.get("model", "instant")
    if not body.get("stream"):
        return web.Response(body=orjson.dumps({
            "id": "chatcmpl-instant", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER}}],
            "usage": USAGE}), content_type="application/json")
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    step = -(-len(ANSWER) // PIECES)
    for i in range(0, len(ANSWER), step):
        await response.write(_chunk(model, {"content": ANSWER[i:i + step]}))
    await response.write(_chunk(model, {}, "stop"))
    await response.write(b"data: " + orjson.dumps({"choices": [], "usage": USAGE}) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def main(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
