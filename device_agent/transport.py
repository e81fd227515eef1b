"""The agent's one small transport interface, and its umqtt.simple implementation (MicroPython).

A transport connects with a last will, subscribes, publishes (QoS 0 or 1; QoS 1 returns once the
broker acknowledged), and hands incoming messages to `on_message(topic: str, payload: bytes)`
from `poll()` (non-blocking) or `wait(ms)`. Any connection failure raises OSError, which ends the
agent's session; device_agent.robust then drops the transport and reconnects with back-off.
`make_transport` picks umqtt.simple on MicroPython and paho-mqtt on CPython
(device_agent.transport_paho).
"""

from device_agent.clock import sleep_ms, ticks_ms, ticks_since


class Transport:
    """Interface: see the module docstring."""

    on_message = None

    def connect(self, will_topic, will_payload):
        """Open the session (clean) with a retained QoS 1 last will."""
        raise NotImplementedError

    def subscribe(self, topic):
        """Subscribe at QoS 1."""
        raise NotImplementedError

    def publish(self, topic, payload, retain=False, qos=1):
        """Publish; with QoS 1, returns after the PUBACK."""
        raise NotImplementedError

    def poll(self):
        """Dispatch whatever has arrived, without blocking."""
        raise NotImplementedError

    def wait(self, timeout_ms):
        """Dispatch messages for up to timeout_ms milliseconds."""
        raise NotImplementedError

    def close(self):
        """Disconnect cleanly if possible (never raises)."""
        raise NotImplementedError


class UmqttTransport(Transport):
    """umqtt.simple (micropython-lib) with keepalive pings and a polling wait."""

    def __init__(
        self, client_id, host, port=1883, user=None, password=None, keepalive=30, ssl=False
    ):
        from umqtt.simple import MQTTClient

        self.client = MQTTClient(client_id, host, port, user, password, keepalive, ssl)
        self.client.set_callback(self._dispatch)
        self.keepalive = keepalive
        self.last_ping = ticks_ms()

    def _dispatch(self, topic, payload):
        if self.on_message is not None:
            self.on_message(topic.decode(), payload)

    def connect(self, will_topic, will_payload):
        self.client.set_last_will(will_topic, will_payload, True, 1)
        self.client.connect(True)
        self.last_ping = ticks_ms()

    def subscribe(self, topic):
        self.client.subscribe(topic, 1)

    def publish(self, topic, payload, retain=False, qos=1):
        self.client.publish(topic, payload, retain, qos)

    def poll(self):
        if self.keepalive and ticks_since(self.last_ping) > self.keepalive * 500:
            self.client.ping()
            self.last_ping = ticks_ms()
        while self.client.check_msg() is not None:
            pass

    def wait(self, timeout_ms):
        start = ticks_ms()
        while True:
            self.poll()
            if ticks_since(start) >= timeout_ms:
                return
            sleep_ms(10)

    def close(self):
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - closing a dead socket must not raise
            pass


def make_transport(
    client_id, host, port=1883, user=None, password=None, keepalive=30, ssl=False, ca_file=None
):
    """umqtt.simple where it exists (MicroPython), paho-mqtt otherwise (CPython)."""
    try:
        import umqtt.simple  # noqa: F401
    except ImportError:  # CPython
        from device_agent.transport_paho import PahoTransport

        return PahoTransport(client_id, host, port, user, password, keepalive, ssl, ca_file)
    return UmqttTransport(client_id, host, port, user, password, keepalive, ssl)
