"""The service's MQTT connections (paho-mqtt 2.x).

`BrokerConnection` is the plumbing every connection of the service shares: a paho client for
the configured broker (TLS and credentials when configured), a start that connects at once
(retrying until a timeout) or in the background, a network thread that reconnects on its own,
a stop, and everything that happens on the connection reported as Events on one thread-safe
queue, which the owner's single loop consumes with `next_event`.

`ServiceMqtt` is the service's own connection: every (re)connection subscribes again to the
devices' status, update and telemetry topics and publishes the service's retained status
(`<prefix>/<fleet>/service/status`: online, with an offline last will). The standby's watch of
that status (standby.py) is the other connection.
"""

from __future__ import annotations

import queue
import ssl
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker_service.server.config import ServiceConfig
from device_agent.energy import mqtt_publish_bytes
from device_agent.topics import Topics

ONLINE = b'{"state": "online"}'
"""The service's retained status while it is connected."""
OFFLINE = b'{"state": "offline"}'
"""The service's retained status after it stopped, and its last will."""


PUBACK_BYTES = 4
"""An MQTT 3.1.1 PUBACK (the broker's answer to a device's QoS 1 publish)."""
SUBACK_BYTES = 5
"""An MQTT 3.1.1 SUBACK for one topic."""
UNSUBACK_BYTES = 4
"""An MQTT 3.1.1 UNSUBACK."""

MAX_INFLIGHT = 0
"""QoS 1 messages the service may have sent and not yet seen acknowledged (0: no limit). paho's
default of 20 let a round's commands out 20 at a time, one broker round trip apart."""


def publish_size(topic: str, payload_len: int, qos: int = 1) -> int:
    """The bytes of the PUBLISH packet that carries `payload_len` bytes on `topic`."""
    return mqtt_publish_bytes(payload_len, len(topic.encode()), qos)


def _packet_size(remaining: int) -> int:
    """An MQTT 3.1.1 packet of `remaining` bytes after its fixed header: type byte, the
    remaining length as a variable-length integer, then those bytes."""
    varint = 1
    while remaining >= 128**varint and varint < 4:
        varint += 1
    return 1 + varint + remaining


def subscribe_size(topic: str) -> int:
    """An MQTT 3.1.1 SUBSCRIBE for one topic: packet id, the topic, the requested QoS."""
    return _packet_size(2 + 2 + len(topic.encode()) + 1)


def unsubscribe_size(topic: str) -> int:
    """An MQTT 3.1.1 UNSUBSCRIBE for one topic: packet id and the topic."""
    return _packet_size(2 + 2 + len(topic.encode()))


def round_uplink(topics: Topics, device: str, update_len: int, fetch: bool) -> int:
    """What an invited device sends the broker for one round, framing included: its update's
    PUBLISH, the PUBACK of the command (QoS 1) and, when it fetches the model (`fetch`), the
    SUBSCRIBE, the model's PUBACK and the UNSUBSCRIBE."""
    size = publish_size(topics.update(device), update_len) + PUBACK_BYTES
    if fetch:
        size += subscribe_size(topics.model) + PUBACK_BYTES + unsubscribe_size(topics.model)
    return size


def round_downlink(topics: Topics, device: str, command_len: int, model_len: int | None) -> int:
    """What the broker sends an invited device for its round command, framing included: the
    command's PUBLISH and, when the device fetches the model (`model_len` not None), the SUBACK,
    the retained model's PUBLISH and the UNSUBACK of its fetch. (The PUBACK of its update is
    counted when the update arrives.)"""
    size = publish_size(topics.command(device), command_len)
    if model_len is not None:
        size += model_fetch_downlink(topics, model_len)
    return size


def model_fetch_downlink(topics: Topics, model_len: int) -> int:
    """What the broker sends a device that fetches the retained model, framing included: the
    SUBACK, the model's PUBLISH and the UNSUBACK."""
    return SUBACK_BYTES + publish_size(topics.model, model_len) + UNSUBACK_BYTES


def service_status_topic(topics: Topics) -> str:
    """The service's own retained presence topic, `<prefix>/<fleet>/service/status` (a standby
    watches it)."""
    return topics.base + "/service/status"


def new_client(
    cfg: ServiceConfig, client_id: str, username: str | None, password: str | None
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, clean session) for the configured broker: these credentials,
    and TLS with the configured CA and client certificate for an mqtts:// broker."""
    _, _, tls = cfg.broker_address()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.max_inflight_messages_set(MAX_INFLIGHT)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(
            ca_certs=cfg.ca_file,
            certfile=cfg.cert_file,
            keyfile=cfg.key_file,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


@dataclass
class Event:
    """What happened on the connection: 'connected'; 'disconnected' or 'refused' (the broker
    turned the connection down) with the reason as payload; or 'message' with topic, payload
    and whether the broker delivered it as a retained message (`retain`: stored state sent on
    subscribing, not a live publish)."""

    kind: str
    topic: str = ""
    payload: bytes = b""
    retain: bool = False


class BrokerConnection:
    """A paho connection to the configured broker that reports what happens on it as Events:
    'connected' (after `_connected` subscribed, on each (re)connection), 'refused',
    'disconnected' and 'message'. paho's network thread reconnects on its own (back-off 0.2 s to
    5 s). Subclasses say what a connection subscribes to (`_connected`) and what to send before
    leaving (`_leaving`)."""

    def __init__(
        self, cfg: ServiceConfig, client_id: str, username: str | None, password: str | None
    ) -> None:
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()  # C queue: cheap per message
        self.client = new_client(cfg, client_id, username, password)
        self.client.reconnect_delay_set(0.2, 5.0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.host, self.port, _ = cfg.broker_address()

    def start(self, timeout: float = 30.0) -> None:
        """Connect (retrying until `timeout`) and start the network thread."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.connect(self.host, self.port, keepalive=30)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(
                        "cannot reach broker %s:%d: %s" % (self.host, self.port, exc)
                    ) from exc
                time.sleep(0.5)
        self.client.loop_start()

    def start_in_background(self) -> None:
        """Start the network thread connecting in the background, retrying until `stop` (the
        broker may be down for long)."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """Send what `_leaving` sends, disconnect and stop the network thread."""
        try:
            self._leaving()
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def next_event(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds."""
        try:
            return self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def _connected(self, client: mqtt.Client) -> None:
        """Subscribe (and publish) what each (re)connection needs: nothing here."""

    def _leaving(self) -> None:
        """Publish what goes out before a deliberate disconnect: nothing here."""

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.events.put(Event("refused", payload=str(reason).encode()))
            return
        self._connected(client)
        self.events.put(Event("connected"))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.events.put(Event("disconnected", payload=str(reason).encode()))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.events.put(Event("message", msg.topic, bytes(msg.payload), bool(msg.retain)))


class ServiceMqtt(BrokerConnection):
    """The service's connection: connects to the broker in the background and reports
    everything as Events."""

    def __init__(
        self, cfg: ServiceConfig, topics: Topics, client_id: str = "tinymetafed-service"
    ) -> None:
        super().__init__(cfg, client_id, cfg.username, cfg.password)
        self.topics = topics
        self.client.will_set(self.service_status(), OFFLINE, qos=1, retain=True)

    def service_status(self) -> str:
        """The service's own retained presence topic."""
        return service_status_topic(self.topics)

    def _connected(self, client: mqtt.Client) -> None:
        """Subscribe to the devices' topics and publish the online status."""
        dev = self.topics.devices
        client.subscribe([(dev + "+/status", 1), (dev + "+/update", 1), (dev + "+/telemetry", 0)])
        client.publish(self.service_status(), ONLINE, qos=1, retain=True)

    def _leaving(self) -> None:
        """Publish the offline status."""
        self.client.publish(self.service_status(), OFFLINE, qos=1, retain=True)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Queue a publish (paho resends QoS 1 after a reconnect); what it returns tells when
        the broker has it."""
        return self.client.publish(topic, bytes(payload), qos=qos, retain=retain)
