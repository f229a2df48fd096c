"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol and replies from a script.

``LLMServer().start()`` listens on 127.0.0.1 (a free port) in a thread; ``server.script`` is a queue of
actions, one per request (``ok``, ``malformed``, ``status`` such as 429 with Retry-After or 500, ``slow``);
when it is empty ``server.responder(request)`` answers. ``server.delay`` is added before every reply.
``server.requests`` records every request body (model, temperature, seed, response_format, messages), and
``server.authorizations`` the Authorization header of each (in the same order).

Run as a script (``python tests/labeling/llm_server.py --delay 0.2``) it serves in its own process and
prints ``PORT <n>``: the benchmark uses it that way so the server does not share the client's interpreter.
"""

import argparse
import asyncio
import collections
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def ok(content, *, usage: dict | None = None) -> dict:
    """A 200 reply whose message content is ``content`` (a dict/list is JSON-encoded)."""
    return {"kind": "ok", "content": content, "usage": usage}


def malformed(text: str = '{"findings": [{"code": "Cardiomegaly", ') -> dict:
    """A 200 reply whose content is not valid JSON."""
    return {"kind": "ok", "content": text}


def status(code: int, *, headers: dict | None = None, body: dict | None = None) -> dict:
    return {"kind": "status", "status": code, "headers": headers or {}, "body": body}


def rate_limited(retry_after: str = "1") -> dict:
    return status(
        429, headers={"Retry-After": retry_after}, body={"error": {"message": "Rate limit reached"}}
    )


def server_error(code: int = 500) -> dict:
    return status(code, body={"error": {"message": "internal error"}})


def slow(seconds: float, then: dict | None = None) -> dict:
    """Sleep ``seconds`` (longer than the client timeout: the client gives up), then send ``then``."""
    return {"kind": "slow", "seconds": seconds, "then": then or ok({"findings": []})}


def reject_json_schema() -> dict:
    """400 for response_format json_schema (servers without structured output); others get the next action."""
    return {"kind": "reject_json_schema"}


def empty_responder(request: dict) -> dict:
    return ok({"findings": []})


def echo_responder(request: dict) -> dict:
    """A plausible answer: the first sentence of the report's first section, as one finding of the schema."""
    text = request["messages"][-1]["content"]
    report = text.rsplit("Report:", 1)[-1]
    m = re.search(r"^([A-Z]+):\n(.+?)(?:\n\n|\Z)", report, flags=re.M | re.S)
    if not m:
        return ok({"findings": []})
    section, body = m.group(1).lower(), m.group(2)
    sentence = re.match(r"\s*([^.]*\.?)", body).group(1).strip()
    fmt = request.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("name", "chexpert_findings").removesuffix("_findings")
    absent = bool(re.search(r"\bno\b", sentence, flags=re.I))
    finding = {
        "sentence": sentence,
        "section": section,
        "phrase": sentence[:40],
        "assertion": "absent" if absent else "present",
        "laterality": "",
        "location": "",
        "size_mm": None,
        "code": "Lung Opacity",
    }
    if schema == "rexgroundingct":
        finding.update(code="2b", region="L", abnormal=not absent, refers_to_prior=False)
    elif schema == "petct":
        finding.update(code="suv", suvmax=3.5, slice=10)
    return ok({"findings": [finding]})


class LLMServer:
    def __init__(self, *, delay: float = 0.0, responder: Callable[[dict], dict] = empty_responder):
        self.delay = delay
        self.responder = responder
        self.script: collections.deque[dict] = collections.deque()
        self.requests: list[dict] = []
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------------
    def start(self) -> "LLMServer":
        server = self

        class Handler(_Handler):
            owner = server

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *actions: dict) -> None:
        with self.lock:
            self.script.extend(actions)

    def next_action(self, request: dict, headers=None) -> dict:
        with self.lock:
            self.requests.append(request)
            self.authorizations.append((headers.get("authorization") or "") if headers is not None else "")
            if self.script:
                return self.script.popleft()
        return self.responder(request)


class _Handler(BaseHTTPRequestHandler):
    owner: LLMServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real endpoints
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def _send(self, code: int, body: dict | str, headers: dict | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout)

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            self._send(
                200, {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "test"}]}
            )
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        action = self.owner.next_action(request, self.headers)
        if self.owner.delay:
            time.sleep(self.owner.delay)
        self._act(action, request)

    def _act(self, action: dict, request: dict) -> None:
        kind = action["kind"]
        if kind == "slow":
            time.sleep(action["seconds"])
            self._act(action["then"], request)
        elif kind == "status":
            self._send(
                action["status"], action.get("body") or {"error": {"message": "error"}}, action["headers"]
            )
        elif kind == "reject_json_schema":
            if (request.get("response_format") or {}).get("type") == "json_schema":
                msg = "response_format of type json_schema is not supported by this model"
                self._send(400, {"error": {"message": msg, "type": "invalid_request_error"}})
            else:
                self._act(self.owner.next_action(request, self.headers), request)
        else:
            self._send(200, completion(action, request))


def completion(action: dict, request: dict) -> dict:
    """The chat-completions body of an ``ok`` action."""
    content = action["content"]
    if not isinstance(content, str):
        content = json.dumps(content)
    prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", []))
    usage = dict(
        action.get("usage")
        or {"prompt_tokens": max(1, prompt // 4), "completion_tokens": max(1, len(content) // 4)}
    )
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "scripted"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


class AsyncLLMServer(LLMServer):
    """The same protocol and script as ``LLMServer``, served by one asyncio event loop (in a thread) instead
    of a thread per connection: the delay is an ``await asyncio.sleep``, so 32 keep-alive connections
    waiting at once cost the server nothing and their replies do not contend for the GIL in 32 threads.
    The benchmark uses it (a real endpoint is another machine; the test server should add no latency)."""

    _STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}

    def start(self) -> "AsyncLLMServer":
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve():
            self._aserver = await asyncio.start_server(self._client, "127.0.0.1", 0, backlog=256)
            ready.set()

        self._thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _run(self, serve) -> None:
        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def stop(self) -> None:
        if getattr(self, "_aserver", None) is not None:

            async def close():
                self._aserver.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._aserver = None

    @property
    def port(self) -> int:
        return self._aserver.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:  # HTTP/1.1 keep-alive: requests one after another on the connection
                line = await reader.readline()
                if not line:
                    return
                method, path = (line.decode("latin-1").split() + ["", ""])[:2]
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                await self._handle(writer, method, path.rstrip("/"), raw, headers)
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return  # the client went away, or stop()
        finally:
            writer.close()

    async def _handle(self, writer, method: str, path: str, raw: bytes, headers: dict) -> None:
        if method == "GET" and path == "/v1/models":
            body = {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "test"}]}
            return await self._send(writer, 200, body)
        if method != "POST" or path != "/v1/chat/completions":
            return await self._send(writer, 404, {"error": {"message": "not found"}})
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            return await self._send(writer, 400, {"error": {"message": "body is not JSON"}})
        action = self.next_action(request, headers)
        if self.delay:
            await asyncio.sleep(self.delay)
        await self._act(writer, action, request)

    async def _act(self, writer, action: dict, request: dict) -> None:
        kind = action["kind"]
        if kind == "slow":
            await asyncio.sleep(action["seconds"])
            await self._act(writer, action["then"], request)
        elif kind == "status":
            body = action.get("body") or {"error": {"message": "error"}}
            await self._send(writer, action["status"], body, action["headers"])
        elif kind == "reject_json_schema":
            if (request.get("response_format") or {}).get("type") == "json_schema":
                msg = "response_format of type json_schema is not supported by this model"
                await self._send(writer, 400, {"error": {"message": msg, "type": "invalid_request_error"}})
            else:
                await self._act(writer, self.next_action(request), request)
        else:
            await self._send(writer, 200, completion(action, request))

    async def _send(self, writer, code: int, body: dict | str, headers: dict | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        lines = [f"HTTP/1.1 {code} {self._STATUS.get(code, 'Error')}", "Content-Type: application/json"]
        lines.append(f"Content-Length: {len(data)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
        await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--responder", choices=["empty", "echo"], default="echo")
    parser.add_argument("--threads", action="store_true", help="thread per connection (LLMServer)")
    args = parser.parse_args()
    responder = echo_responder if args.responder == "echo" else empty_responder
    cls = LLMServer if args.threads else AsyncLLMServer
    server = cls(delay=args.delay, responder=responder).start()
    print(f"PORT {server.port}", flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        server.stop()


if __name__ == "__main__":
    main()
