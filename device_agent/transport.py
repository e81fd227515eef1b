"""The agent's one small transport interface, and its umqtt.simple implementation (MicroPython).

A transport connects with a last will, subscribes, publishes (QoS 0 or 1; QoS 1 returns once the
broker acknowledged), and hands incoming messages to `on_message(topic: str, payload: bytes)`
from `poll()` (non-blocking) or `wait(ms)`. A message longer than its topic's limit (`limits`,
set by the agent) goes to `on_oversized(topic, size)` instead, unread. Any connection failure
raises OSError, which ends the agent's session; device_agent.robust then drops the transport and
reconnects with back-off. The agent (device_agent.agent.make_transport) picks this module's
umqtt.simple transport on MicroPython and paho-mqtt on CPython (device_agent.transport_paho,
built on the interface here; this module never imports it).

On MicroPython, a `BoundedReader` wraps the umqtt.simple client's message read and connect,
for two things umqtt.simple lacks:
- its message read checks the MQTT remaining length before it reads a payload, and skips one
  over the topic's limit in DRAIN_CHUNK-byte pieces (a retained oversized model would otherwise
  be a MemoryError on every reconnect);
- its connect wraps the socket with a verifying TLS context (the broker's CA from the config,
  CERT_REQUIRED, the host name checked), the same on every umqtt.simple release.
umqtt.simple is imported when the first transport is made, after the agent allocated its
parameter-sized arrays in a fresh heap, as before.
"""

from device_agent import limits as sizes
from device_agent.clock import sleep_ms, ticks_ms, ticks_since


class Transport:
    """Interface: see the module docstring."""

    on_message = None
    on_oversized = None
    limits = None
    """{topic: largest payload read}; None reads up to limits.MAX_PAYLOAD on any topic."""

    def limit(self, topic):
        """The largest payload read on `topic` (a str): its own limit, the command limit for a
        topic without one, or MAX_PAYLOAD when no limits were set."""
        if self.limits is None:
            return sizes.MAX_PAYLOAD
        return self.limits.get(topic, sizes.MAX_COMMAND)

    def connect(self, will_topic, will_payload):
        """Open the session (clean) with a retained QoS 1 last will."""
        raise NotImplementedError

    def subscribe(self, topic):
        """Subscribe at QoS 1 (again: the broker then re-sends the topic's retained message)."""
        raise NotImplementedError

    def unsubscribe(self, topic):
        """Unsubscribe (the broker's UNSUBACK is consumed by a later poll or wait)."""
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


def read_file(path):
    """The bytes of a file (the broker's CA certificate)."""
    with open(path, "rb") as f:
        return f.read()


PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"


def ca_der(data):
    """The DER bytes of the first certificate in `data`, PEM text or DER already: what
    MicroPython's `load_verify_locations(cadata=...)` takes (the unix port refuses PEM)."""
    start = data.find(PEM_BEGIN)
    if start < 0:
        return data
    end = data.find(PEM_END, start)
    if end < 0:
        raise ValueError("ca_file: a PEM certificate without its END line")
    import binascii

    return binascii.a2b_base64(data[start + len(PEM_BEGIN) : end])


def tls_context(ca_file):
    """A MicroPython TLS client context that trusts only the CA in `ca_file` (PEM or DER) and
    requires the broker's certificate; the host name is checked at wrap time."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # not in the stubs
    context.load_verify_locations(cadata=ca_der(read_file(ca_file)))
    return context


def _utf8(text):
    return text.encode() if isinstance(text, str) else bytes(text)


def _field(text):
    data = _utf8(text)
    return bytes((len(data) >> 8, len(data) & 0xFF)) + data


def remaining_length(size):
    """MQTT's variable-length encoding of a packet's remaining length."""
    out = bytearray()
    while True:
        byte = size & 0x7F
        size >>= 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out)


def unsubscribe_packet(pid, topic):
    """An MQTT 3.1.1 UNSUBSCRIBE packet for one topic (umqtt.simple has none)."""
    body = bytes((pid >> 8, pid & 0xFF)) + _field(topic)
    return b"\xa2" + remaining_length(len(body)) + body


def connect_packet(client_id, user, password, keepalive, will, clean=True):
    """An MQTT 3.1.1 CONNECT packet; `will` is (topic, message, retain, qos) or None."""
    flags = 0x02 if clean else 0
    body = _field(client_id)
    if will is not None:
        topic, message, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        body += _field(topic) + _field(message)
    if user is not None:
        flags |= 0xC0
        body += _field(user) + _field(password or "")
    head = b"\x00\x04MQTT\x04" + bytes((flags, keepalive >> 8, keepalive & 0xFF))
    return b"\x10" + remaining_length(len(head) + len(body)) + head + body


def read_exact(sock, n):
    """Exactly n bytes from a blocking socket, or OSError when the connection ends first."""
    data = sock.read(n) if n else b""
    if data is None or len(data) != n:
        raise OSError(-1)
    return data


def drain(sock, n):
    """Read and drop n bytes, DRAIN_CHUNK at a time: a skipped message is never held whole."""
    while n > 0:
        n -= len(read_exact(sock, min(n, sizes.DRAIN_CHUNK)))


def read_length(sock):
    """A remaining length (at most four bytes, as MQTT allows); OSError when malformed."""
    size = 0
    for shift in (0, 7, 14, 21):
        byte = read_exact(sock, 1)[0]
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return size
    raise OSError("mqtt: remaining length over four bytes")


class BoundedReader:
    """umqtt.simple's message read and connect for one client, bounded and verifying.

    `install()` puts `connect` and `wait_msg` on the client, so umqtt.simple's own publish,
    subscribe and check_msg (which wait through wait_msg) use them. `tls` is a TLS context
    (tls_context) or None; `limit_of(topic)` gives the largest payload to read on a topic
    (bytes); `on_oversized(topic, size)` hears of a message skipped unread (topic None when the
    topic itself was over limits.MAX_TOPIC).
    """

    def __init__(self, client, tls=None):
        self.client = client
        self.tls = tls
        self.limit_of = lambda topic: sizes.MAX_COMMAND
        self.on_oversized = None

    def install(self):
        """Replace the client's connect and wait_msg with this reader's."""
        self.client.connect = self.connect
        self.client.wait_msg = self.wait_msg

    def connect(self, clean_session=True, timeout=None):
        """Open the socket (wrapped by the TLS context, the broker's name checked), send
        CONNECT, and check the CONNACK; OSError on any failure. `timeout` (s) bounds the
        socket's connect, as in umqtt.simple 1.5."""
        import socket

        c = self.client
        addr = socket.getaddrinfo(c.server, c.port)[0][-1]
        sock = socket.socket()
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.connect(addr)
            if timeout is not None:
                sock.settimeout(None)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=c.server)
        except Exception as exc:  # noqa: BLE001 - an untrusted certificate is a ValueError
            sock.close()
            raise OSError("mqtt: %r" % exc) from None
        c.sock = sock
        will = None
        if c.lw_topic:
            will = (c.lw_topic, c.lw_msg, c.lw_retain, c.lw_qos)
        user = c.user if c.user else None
        sock.write(connect_packet(c.client_id, user, c.pswd, c.keepalive, will, clean_session))
        ack = read_exact(sock, 4)
        if ack[0] != 0x20 or ack[1] != 0x02 or ack[3] != 0:
            raise OSError("mqtt: connection refused (CONNACK %d)" % ack[3])
        return ack[2] & 1

    def wait_msg(self):
        """Handle one incoming packet, like umqtt.simple's wait_msg, but check a PUBLISH's
        remaining length before reading its payload: one over its topic's limit is drained and
        reported to on_oversized, never allocated. Returns the packet type (None: nothing)."""
        sock = self.client.sock
        res = sock.read(1)
        sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            read_exact(sock, 1)
            return None
        if res == b"\xb0":  # UNSUBACK (umqtt.simple does not know it)
            read_exact(sock, 3)
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        size = read_length(sock)
        head = read_exact(sock, 2)
        topic_len = (head[0] << 8) | head[1]
        size -= topic_len + 2 + (2 if op & 6 else 0)
        if size < 0:
            raise OSError("mqtt: malformed PUBLISH")
        self._deliver(sock, op, topic_len, size)
        return op

    def _deliver(self, sock, op, topic_len, size):
        """Read (or skip) the topic, packet id and payload of a PUBLISH; acknowledge QoS 1."""
        topic = None
        if topic_len > sizes.MAX_TOPIC:
            drain(sock, topic_len)
        else:
            topic = read_exact(sock, topic_len)
        pid = read_exact(sock, 2) if op & 6 else None
        if topic is None or size > self.limit_of(topic):
            drain(sock, size)
            if self.on_oversized is not None:
                self.on_oversized(topic, size)
        else:
            self.client.cb(topic, read_exact(sock, size))
        if op & 6 == 2 and pid is not None:
            sock.write(b"\x40\x02" + pid)
        elif op & 6 == 4:
            raise OSError("mqtt: QoS 2 was never asked for")


class UmqttTransport(Transport):
    """umqtt.simple (micropython-lib) with keepalive pings, a polling wait, verifying TLS and
    bounded reads (BoundedReader)."""

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
        from umqtt.simple import MQTTClient

        self.client = MQTTClient(client_id, host, port, user, password, keepalive)
        self.client.set_callback(self._dispatch)
        reader = BoundedReader(self.client, tls_context(ca_file) if ssl else None)
        reader.limit_of = self._limit_of
        reader.on_oversized = self._oversized
        reader.install()
        self.keepalive = keepalive
        self.last_ping = ticks_ms()

    def _limit_of(self, topic):
        try:
            return self.limit(topic.decode())
        except UnicodeError:
            return 0

    def _oversized(self, topic, size):
        if self.on_oversized is not None:
            name = None
            if topic is not None:
                try:
                    name = topic.decode()
                except UnicodeError:
                    pass
            self.on_oversized(name, size)

    def _dispatch(self, topic, payload):
        if self.on_message is not None:
            self.on_message(topic.decode(), payload)

    def connect(self, will_topic, will_payload):
        self.client.set_last_will(will_topic, will_payload, True, 1)
        self.client.connect(True)
        self.last_ping = ticks_ms()

    def subscribe(self, topic):
        self.client.subscribe(topic, 1)

    def unsubscribe(self, topic):
        c = self.client
        sock = c.sock
        if sock is None:
            raise OSError("not connected")
        c.pid = c.pid % 65535 + 1
        sock.write(unsubscribe_packet(c.pid, topic))

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
