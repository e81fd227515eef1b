"""An in-process MQTT 3.1.1 broker (amqtt) on 127.0.0.1 at a free port: the demo's embedded
default, so that nothing needs installing. For production use a real broker (mosquitto)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading


class EmbeddedBroker:
    """amqtt running in its own thread and event loop; `url` once started."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None
        self.broker = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return "mqtt://%s:%d" % (self.host, self.port)

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and return once it listens."""
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), daemon=True, name="embedded-broker"
        )
        self.thread.start()
        if not ready.wait(timeout) or self.error:
            raise RuntimeError("embedded broker did not start: %r" % self.error)
        return self

    def _run(self, ready: threading.Event) -> None:
        from amqtt.broker import Broker

        asyncio.set_event_loop(self.loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        try:
            self.broker = Broker(config, loop=self.loop)
            self.loop.run_until_complete(self.broker.start())
            server = self.broker._servers["default"]
            self.port = server.instance.sockets[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self.error = exc
            ready.set()
            return
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        """Shut the broker down and end its thread."""
        if self.broker is None or self.thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop)
        with contextlib.suppress(Exception):  # shutting down anyway
            future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
