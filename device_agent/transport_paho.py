"""The agent's transport on CPython (gateways, Raspberry Pi, simulations): paho-mqtt 2.x, driven
synchronously by the agent's loop like umqtt.simple (no background thread)."""

import time

import paho.mqtt.client as mqtt

from device_agent.transport import Transport


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
            self.client.tls_set(ca_certs=ca_file)
        self.client.on_message = self._dispatch
        self.host = host
        self.port = port
        self.keepalive = keepalive

    def _dispatch(self, client, userdata, msg):
        if self.on_message is not None:
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
