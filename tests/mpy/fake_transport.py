# An in-process stand-in for the agent's transport (device_agent.transport.Transport), scripted
# session by session, for unit tests of the agent and its reconnect policy without a broker.
# Runs under MicroPython and CPython alike (tests/mpy/session_check.py uses it on both).


class FakeBroker:
    """Scripted sessions. Each entry of `sessions` is a dict for one connection attempt:
    "refuse": connect raises OSError; "inbox": [(topic, payload)] delivered by the first polls;
    "lose": once the inbox is empty, the next poll raises OSError (a lost connection).
    Everything published, on any session, lands in `published` as (topic, payload, retain, qos).
    """

    def __init__(self, sessions):
        self.sessions = sessions
        self.transports = []
        self.published = []

    def factory(self, client_id, host, port, user, password, keepalive, ssl, ca_file=None):
        """A transport factory with make_transport's signature: the next scripted session."""
        plan = self.sessions[len(self.transports)]
        transport = FakeTransport(self, client_id, plan)
        self.transports.append(transport)
        return transport

    def topics_published(self):
        """The topics published, in order."""
        return [p[0] for p in self.published]


class FakeTransport:
    """One scripted session; see FakeBroker."""

    on_message = None

    def __init__(self, broker, client_id, plan):
        self.broker = broker
        self.client_id = client_id
        self.inbox = list(plan.get("inbox", ()))
        self.refuse = plan.get("refuse", False)
        self.lose = plan.get("lose", False)
        self.will = None
        self.subscriptions = []
        self.history = []  # ("sub" or "unsub", topic), in order
        self.connected = False
        self.closed = False

    def connect(self, will_topic, will_payload):
        self.will = (will_topic, will_payload)
        if self.refuse:
            raise OSError("connection refused")
        self.connected = True

    def subscribe(self, topic):
        self._check()
        self.subscriptions.append(topic)
        self.history.append(("sub", topic))

    def unsubscribe(self, topic):
        self._check()
        self.subscriptions.remove(topic)
        self.history.append(("unsub", topic))

    def publish(self, topic, payload, retain=False, qos=1):
        self._check()
        self.broker.published.append((topic, payload, retain, qos))

    def poll(self):
        self._check()
        if self.inbox:
            topic, payload = self.inbox.pop(0)
            self.on_message(topic, payload)
        elif self.lose:
            self.connected = False
            raise OSError("connection lost")

    def wait(self, timeout_ms):
        self.poll()

    def close(self):
        self.closed = True
        self.connected = False

    def _check(self):
        if not self.connected:
            raise OSError("not connected")
