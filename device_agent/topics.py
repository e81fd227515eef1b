"""The MQTT topic tree of a fleet: one subtree per device, so a broker ACL can confine a device
to its own. `Topics` names the model's and the devices' topics; `check_name` refuses ids that
would break the tree.

    <prefix>/<fleet>/model                      retained MODEL payload (the current θ_g), QoS 1;
                                                a device subscribes only to fetch it when
                                                invited, and unsubscribes once it holds it
    <prefix>/<fleet>/service/status             the service's own retained presence (named by
                                                broker_service.server.mqtt)
    <prefix>/<fleet>/devices/<id>/status        retained JSON presence: birth ("online" with
                                                capabilities), last will and goodbye ("offline")
    <prefix>/<fleet>/devices/<id>/cmd           COMMAND payloads for this device, QoS 1
    <prefix>/<fleet>/devices/<id>/update        the device's DELTA payloads, QoS 1
    <prefix>/<fleet>/devices/<id>/telemetry     JSON per round, QoS 0

The prefix may have several levels; a fleet or device id is one level of 1 to 64 characters of
[A-Za-z0-9_.-]. A mosquitto ACL then needs only `pattern` lines with %u (user = device id), as
deploy/mosquitto/acl has them: `pattern read tinymetafed/+/model`,
`pattern read tinymetafed/+/devices/%u/cmd`, and `pattern write` for the device's status, update
and telemetry.
"""

DEFAULT_PREFIX = "tinymetafed"
DEFAULT_FLEET = "default"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


def check_name(kind, name):
    """Reject ids that would break the tree (empty, too long, '/', '+', '#', spaces...)."""
    if not name or len(name) > 64:
        raise ValueError("%s must be 1 to 64 characters" % kind)
    for ch in name:
        if ch not in _ID_CHARS:
            raise ValueError("%s %r has a character outside [A-Za-z0-9_.-]" % (kind, name))
    return name


class Topics:
    """The topics of one fleet: `model`, and a device's topics by its id; `device_of` parses one."""

    def __init__(self, prefix=DEFAULT_PREFIX, fleet=DEFAULT_FLEET):
        for part in prefix.split("/"):
            check_name("prefix part", part)
        self.prefix = prefix
        self.fleet = check_name("fleet", fleet)
        self.base = prefix + "/" + fleet
        self.model = self.base + "/model"
        self.devices = self.base + "/devices/"

    def status(self, device_id):
        """Retained presence of a device."""
        return self.devices + check_name("device id", device_id) + "/status"

    def command(self, device_id):
        """Round commands to a device."""
        return self.devices + check_name("device id", device_id) + "/cmd"

    def update(self, device_id):
        """A device's sparse updates."""
        return self.devices + check_name("device id", device_id) + "/update"

    def telemetry(self, device_id):
        """A device's per-round measurements."""
        return self.devices + check_name("device id", device_id) + "/telemetry"

    def device_of(self, topic):
        """(device id, leaf) of a topic in this fleet's device subtree, or (None, None)."""
        if not topic.startswith(self.devices):
            return None, None
        rest = topic[len(self.devices) :]
        cut = rest.find("/")
        if cut <= 0:
            return None, None
        return rest[:cut], rest[cut + 1 :]
