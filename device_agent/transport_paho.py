"""The agent's transport on CPython (gateways, Raspberry Pi, simulations): paho-mqtt 2.x, driven
synchronously by the agent's loop like umqtt.simple (no background thread).

TLS verifies the broker's certificate and name: against `ca_file` (PEM, or DER as a board's)
when given, else against the system's trusted CAs. paho reads a whole message before it hands it
over, so the size limits are applied on delivery (a CPython host has the memory to spare).
"""

import ssl as tls
import time

import paho.mqtt.client as mqtt

from device_agent.transport import PEM_BEGIN, Transport, read_file


def tls_context(ca_file=None):
    """A client context requiring the broker's certificate (CERT_REQUIRED, host name checked)
    signed by the CA in `ca_file` (PEM or DER), or by a system CA without one."""
    if ca_file is None:
        return tls.create_default_context()
    data = read_file(ca_file)
    if PEM_BEGIN in data:
        return tls.create_default_context(cadata=data.decode("ascii"))
    return tls.create_default_context(cadata=data)


class PahoTransport(Transport):
    """paho-mqtt client speaking MQTT 3.1.1 with a clean session."""

    def __init__(
        self,
        client_id,
        host,
        port=1883,
        user=None,
        password=None,
        keepalive=30,
        ssl=False,
        ca_file=None,
    ):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if ssl:
            self.client.tls_set_context(tls_context(ca_file))
        self.client.on_message = self._dispatch
        self.host = host
        self.port = port
        self.keepalive = keepalive

    def _dispatch(self, client, userdata, msg):
        size = len(msg.payload)
        if size > self.limit(msg.topic):
            if self.on_oversized is not None:
                self.on_oversized(msg.topic, size)
        elif self.on_message is not None:
            self.on_message(msg.topic, bytes(msg.payload))

    def _check(self, rc):
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError("mqtt: %s" % mqtt.error_string(rc))

    def connect(self, will_topic, will_payload):
        self.client.will_set(will_topic, will_payload, qos=1, retain=True)
        try:
            self._check(self.client.connect(self.host, self.port, self.keepalive))
        except (ConnectionError, TimeoutError) as exc:
            raise OSError(str(exc)) from exc
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            self._loop(0.05)
            if time.monotonic() > deadline:
                raise OSError("mqtt: no CONNACK within 10 s")

    def _loop(self, timeout):
        self._check(self.client.loop(timeout))

    def subscribe(self, topic):
        rc, mid = self.client.subscribe(topic, qos=1)
        self._check(rc)
        self._loop(0.0)

    def unsubscribe(self, topic):
        rc, mid = self.client.unsubscribe(topic)
        self._check(rc)
        self._loop(0.0)

    def publish(self, topic, payload, retain=False, qos=1):
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        self._check(info.rc)
        deadline = time.monotonic() + 30
        while qos and not info.is_published():
            self._loop(0.05)
            if time.monotonic() > deadline:
                raise OSError("mqtt: no PUBACK within 30 s")

    def poll(self):
        self._loop(0.0)

    def wait(self, timeout_ms):
        end = time.monotonic() + timeout_ms / 1000.0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self._loop(min(left, 0.1))

    def close(self):
        try:
            self.client.disconnect()
            self.client.loop(0.1)
        except Exception:  # noqa: BLE001 - closing a dead connection must not raise
            pass
