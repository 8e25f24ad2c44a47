"""uvicorn in a daemon thread on a free loopback port: the real HTTP path, for tests and benchmarks."""

from __future__ import annotations

import threading
import time
from typing import Any


class BackgroundServer:
    """uvicorn in a daemon thread on a free loopback port, for tests and benchmarks.

        with BackgroundServer(create_app(state)) as server:
            httpx.get(server.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> None:
        self.app, self.host, self.port, self.timeout = app, host, port, timeout

    def __enter__(self) -> "BackgroundServer":
        import uvicorn
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="clip4rec-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)
