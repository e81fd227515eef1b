"""The standby of a primary/standby pair: `tinymetafed serve --standby`.

Two services share one state directory (a shared volume) and one configuration. The one that
holds the state lock (statelock.py) serves; the standby waits, watching two things:

- the primary's retained status on `<prefix>/<fleet>/service/status` (online while it is
  connected; `offline` when it stops, and as its last will when it dies): the fast signal;
- the state lock: the arbiter. The standby tries it every POLL_SECONDS and at once when the
  primary's status turns offline, and takes over only when it gets it, so a primary that lost
  its broker connection but still runs (and holds the lock) is never doubled.

Once it holds the lock the standby is the service: it resumes from the checkpoint and replays the
open round's journal as a restarted service would, and finishes the session. The watch uses its
own client id (`tinymetafed-standby-<host>-<pid>`), so it never takes the primary's connection
over, and the standby's own broker account when `standby_username` is set.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from broker_service.observe.logs import EventLog
from broker_service.server.config import ServiceConfig
from broker_service.server.mqtt import BrokerConnection, Event, service_status_topic
from broker_service.server.statelock import Holder, StateLock, describe
from device_agent.topics import Topics

POLL_SECONDS = 1.0
"""How often the standby tries the lock when nothing else happens."""


def primary_state(payload: bytes) -> str:
    """The state in a service status payload (`online`, `offline`), or `unknown` when the
    payload is not one (an empty retained message clears the topic)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return "unknown"
    state = doc.get("state") if isinstance(doc, dict) else None
    return state if isinstance(state, str) and state else "unknown"


def watch_client_id() -> str:
    """The watch's client id: never the service's, unique per standby process."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return "tinymetafed-standby-%s-%d" % (host[:40], os.getpid())


class StatusWatch(BrokerConnection):
    """A broker connection that only subscribes to the service's status; connects and reconnects
    in the background (the broker may be down while the standby waits) and reports Events, and
    'unreachable' when a connection attempt fails."""

    def __init__(self, cfg: ServiceConfig, topics: Topics) -> None:
        user = cfg.standby_username or cfg.username
        password = cfg.standby_password if cfg.standby_username else cfg.password
        super().__init__(cfg, watch_client_id(), user, password)
        self.topic = service_status_topic(topics)
        self.client.on_connect_fail = self._on_connect_fail

    def _connected(self, client: mqtt.Client) -> None:
        """Subscribe to the service's status."""
        client.subscribe(self.topic, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.events.put(Event("unreachable", payload=b"%s:%d" % (self.host.encode(), self.port)))


class Standby:
    """Waits for the state lock of `cfg.state_dir`; `wait()` returns it held (or None when
    `stop` is set first) for the service to run with."""

    def __init__(
        self,
        cfg: ServiceConfig,
        log: EventLog,
        stop: threading.Event | None = None,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.stop = stop or threading.Event()
        self.poll = poll
        self.lock = StateLock(cfg.state_dir)
        self.primary = "unknown"
        self.broker = "unknown"
        self.holder: Holder | None = None
        self.told_held = False

    def wait(self) -> StateLock | None:
        """Take the lock now when it is free; else watch the primary and take the lock once it
        is gone."""
        started = time.monotonic()
        if self.lock.try_acquire():
            self.log("standby_takeover", state_dir=self.cfg.state_dir, primary="none", waited=0)
            return self.lock
        watch = StatusWatch(self.cfg, Topics(self.cfg.prefix, self.cfg.fleet))
        self.holder = self.lock.holder()
        self.log(
            "standby_waiting",
            state_dir=self.cfg.state_dir,
            holder=describe(self.holder),
            watching=watch.topic,
            broker=self.cfg.broker,
        )
        watch.start_in_background()
        try:
            return self._watch(watch, started)
        finally:
            watch.stop()

    def _watch(self, watch: StatusWatch, started: float) -> StateLock | None:
        """Handle the watch's events and try the lock after each batch and every `poll` s."""
        while not self.stop.is_set():
            event = watch.next_event(self.poll)
            while event is not None:
                self._saw(event)
                event = watch.next_event(0)
            if self.lock.try_acquire():
                self.log(
                    "standby_takeover",
                    state_dir=self.cfg.state_dir,
                    primary=self.primary,
                    previous=describe(self.holder),
                    waited="%.1f" % (time.monotonic() - started),
                )
                return self.lock
            self._still_held()
        return None

    def _saw(self, event: Event) -> None:
        """Log each change the watch reported: the broker connection's state (connected,
        disconnected, refused, unreachable: the lock alone then decides) or the primary's."""
        if event.kind != "message":
            if event.kind != self.broker:
                self.broker = event.kind
                self.log("standby_saw", broker=event.kind, reason=event.payload.decode() or None)
            return
        state = primary_state(event.payload)
        if state == self.primary:
            return
        self.primary = state
        self.told_held = False
        self.log("standby_saw", primary=state)

    def _still_held(self) -> None:
        """The lock is still held: log a new holder (the primary restarted, or another standby
        took over), and once when the primary is offline yet holds the lock (it is still
        stopping, or it lost the broker but runs on: the lock decides)."""
        holder = self.lock.holder()
        if holder is not None and holder != self.holder:
            self.holder = holder
            self.log("standby_saw", holder=holder.describe())
        if self.primary == "offline" and not self.told_held:
            self.told_held = True
            self.log("standby_lock_held", primary=self.primary, holder=describe(holder))
