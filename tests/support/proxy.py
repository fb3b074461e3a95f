"""An HTTP proxy in front of a local server (the GCS emulator): to count or fail requests."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
import time
from collections.abc import Iterator


class ForwardingHandler(http.server.BaseHTTPRequestHandler):
    """Forwards every request to ``upstream``; ``intercept()`` may answer one itself first."""

    upstream: tuple[str, int]

    def intercept(self) -> int | None:
        """A status to answer instead of forwarding (None: forward)."""
        return None

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.intercept()
        if status is not None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        connection.request(self.command, self.path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        connection.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def proxy(handler: type[ForwardingHandler], upstream_url: str, **attributes: object) -> Iterator[str]:
    """Serve a subclass of ``handler`` (with ``attributes``) in front of ``upstream_url``; yields the proxy's URL."""
    host, port = upstream_url.removeprefix("http://").split(":")
    bound = type(handler.__name__, (handler,), {"upstream": (host, int(port)), **attributes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), bound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def slow_tcp_proxy(redis_url: str, delay_s: float) -> Iterator[str]:
    """A TCP proxy in front of a redis URL that holds each reply ``delay_s`` seconds; yields its URL."""
    import socket
    from urllib.parse import urlsplit

    target = urlsplit(redis_url)
    listener = socket.create_server(("127.0.0.1", 0))
    stopped = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        listener.settimeout(0.2)
        while not stopped.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection((target.hostname, target.port))
            threading.Thread(target=pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, delay_s), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}{target.path or '/0'}"
    finally:
        stopped.set()
        listener.close()
