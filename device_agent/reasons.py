"""Why a message was refused: the one list of rejection and abort reasons.

Plain string constants shared by the agent, the codec twins, the service and the docs, so a
reason logged on a board, counted by the service and shown in Grafana is spelled the same
everywhere. Importable on MicroPython.
"""

# A payload the codec cannot accept (agent and service alike).
TRUNCATED = "truncated"  # shorter than its header
OVERSIZED = "oversized"  # longer than the receiver's limit (device_agent.limits)
BAD_MAGIC = "bad_magic"  # not a TinyMetaFed payload
BAD_VERSION = "bad_version"  # a wire format this side does not speak
BAD_KIND = "bad_kind"  # a MODEL where a DELTA was expected, or an unknown kind
BAD_LENGTHS = "bad_lengths"  # header lengths disagree with each other or with the body
BAD_CHECKSUM = "bad_checksum"  # CRC-32 mismatch
BAD_ENCODING = "bad_encoding"  # unknown index or value encoding
BAD_VALUE_ENCODING = "bad_value_encoding"  # an encoder asked for an unknown value encoding
BAD_INDICES = "bad_indices"  # indices out of range, not ascending, or extra bitmap bits
BAD_VALUES = "bad_values"  # non-finite values or an unusable int8 scale
BAD_JSON = "bad_json"  # a command body that is not a JSON object
BAD_COMMAND = "bad_command"  # a command without its integer round or version
BAD_SETTING = "bad_setting"  # a command field of the wrong type, not finite or out of range

# An update the open round refuses (service).
LATE = "late"  # for a round already closed
WRONG_ROUND = "wrong_round"  # for a round not open yet
STALE_VERSION = "stale_version"  # computed on another model version
TOO_STALE = "too_stale"  # asynchronous: computed on a version more steps behind than the bound
SHAPE_MISMATCH = "shape_mismatch"  # a vector of another length than the model
NOT_IN_COHORT = "not_in_cohort"  # from a device the round did not invite
NORM_BOUND = "norm_bound"  # an update longer than the norm bound
OVER_BUDGET = "over_budget"  # more entries than the round's Top-P% keeps
NO_OPEN_ROUND = "no_open_round"  # arrived while no round was open
UNKNOWN_DEVICE = "unknown_device"  # signed updates are required and the device has no key
BAD_SIGNATURE = "bad_signature"  # an HMAC tag (an update's, or a keyed device's command) fails
STORAGE_ERROR = "storage_error"  # the journal could not store it (e.g. disk full)
BAD_TELEMETRY = "bad_telemetry"  # telemetry that is not a JSON object

# The agent.
UNSIGNED = "unsigned"  # a keyed device got a command without its HMAC tag
ROLLBACK = "rollback"  # a command or model older than the newest the device verified
BAD_DIGEST = "bad_digest"  # the model's SHA-256 differs from the one its signed command names

# A status or telemetry message the service refuses before using it.
TOO_DEEP = "too_deep"  # JSON nested deeper than limits.MAX_JSON_DEPTH (refused unparsed)
BAD_NUMBER = "bad_number"  # a number that is not finite, out of range or of the wrong type
RETAINED = "retained"  # a retained message on a topic where only live ones count
BAD_DEVICE_ID = "bad_device_id"  # a topic whose device id breaks the topic tree's rules

# A round the service refuses to close with the updates it accepted.
NON_FINITE_MODEL = "non_finite_model"  # the aggregate would make θ_g non-finite

# Either side.
INTERNAL_ERROR = "internal_error"  # a message whose handling raised; the receiver keeps its state

# Why a device abandoned a round in progress.
ABORT_NEWER_MODEL = "newer_model"
ABORT_CANCELLED = "cancelled"
ABORT_SUPERSEDED = "superseded"

REJECTIONS = (
    TRUNCATED,
    OVERSIZED,
    BAD_MAGIC,
    BAD_VERSION,
    BAD_KIND,
    BAD_LENGTHS,
    BAD_CHECKSUM,
    BAD_ENCODING,
    BAD_VALUE_ENCODING,
    BAD_INDICES,
    BAD_VALUES,
    BAD_JSON,
    BAD_COMMAND,
    BAD_SETTING,
    LATE,
    WRONG_ROUND,
    STALE_VERSION,
    TOO_STALE,
    SHAPE_MISMATCH,
    NOT_IN_COHORT,
    NORM_BOUND,
    OVER_BUDGET,
    NO_OPEN_ROUND,
    UNKNOWN_DEVICE,
    BAD_SIGNATURE,
    STORAGE_ERROR,
    BAD_TELEMETRY,
    TOO_DEEP,
    BAD_NUMBER,
    RETAINED,
    BAD_DEVICE_ID,
    NON_FINITE_MODEL,
    INTERNAL_ERROR,
    UNSIGNED,
    ROLLBACK,
    BAD_DIGEST,
)
"""Every rejection reason, in the order the docs list them."""

ABORTS = (ABORT_NEWER_MODEL, ABORT_CANCELLED, ABORT_SUPERSEDED)
"""Every reason a round in progress is abandoned."""
