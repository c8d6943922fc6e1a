# Meter configuration: defaults here, provisioned overrides in /config.json on the data
# filesystem. Unknown keys are refused so a typo never silently keeps a default; so is a
# value outside its range (RANGES) or a meter id outside the id rule (valid_id).
import json

DEFAULTS = {
    "meter_id": "meter-0001",
    "poll_ms": 1000,  # metering poll period
    "meter_constant": 3200,  # imp/kWh
    "telemetry_period_s": 60,
    "mqtt_host": "",  # empty: no MQTT
    "mqtt_port": 1883,
    "mqtt_keepalive_s": 60,
    "mqtt_timeout_s": 5,
    "mqtt_user": "",  # per-meter broker credentials (empty: none)
    "mqtt_password": "",
    "mqtt_tls": False,
    "mqtt_ca": "/ca.der",  # CA certificate (DER) on the data partition, for mqtt_tls
    "wifi_ssid": "",
    "wifi_key": "",
    "checkpoint_s": 900,  # save energy at least this often while it changes
    "checkpoint_wh": 5,  # ... and as soon as this much is unsaved (see README: loss bound;
    # boards with a power-fail input and the last-gasp journal skip this one)
    "checkpoint_min_s": 0,  # ... but no more often than this
    "profile_period_s": 900,  # block load profile capture period: 900 or 1800
    # supply control (meter/control.py, meter/relay.py, meter/limiter.py)
    "control_mode": 1,  # DLMS disconnect control mode 0-6, until one is persisted
    "relay_retries": 2,
    "relay_ops_per_min": 6,
    "load_limit_w": 0,  # 0: no load limiter
    "tamper_disconnect": False,  # open terminal cover: local disconnect (g)
    "load_limiter": {},  # the limiter's other settings (meter/ctlboot.py LIMITER)
    "vref_v": 240,  # ratings: reference voltage and maximum current (Ib: calibration)
    "imax_a": 60,
    "import_only": False,  # export is then a tamper signal (reverse flow)
}

# Each number's range, each string's length range (both ends included): key, lo, hi.
# Booleans have none; load_limiter is meter/ctlboot.py's check_limiter; meter_id valid_id.
# One string, as it stays in the ROMFS image (a tuple of them took 960 B of heap); few new
# names and short strings here, since each is a qstr in the heap for good.
RANGES = (
    "poll_ms 100 60000\n"
    "meter_constant 100 100000\n"
    "telemetry_period_s 1 86400\n"
    "mqtt_host 0 253\n"
    "mqtt_port 1 65535\n"
    "mqtt_keepalive_s 10 65535\n"
    "mqtt_timeout_s 1 60\n"
    "mqtt_user 0 128\n"
    "mqtt_password 0 128\n"
    "mqtt_ca 1 64\n"
    "wifi_ssid 0 32\n"
    "wifi_key 0 64\n"
    "checkpoint_s 1 86400\n"
    "checkpoint_wh 1 1000\n"
    "checkpoint_min_s 0 3600\n"
    "profile_period_s 60 86400\n"
    "control_mode 0 6\n"
    "relay_retries 0 10\n"
    "relay_ops_per_min 1 60\n"
    "load_limit_w 0 1000000\n"
    "vref_v 100 300\n"
    "imax_a 1 200\n"
)
PATH = "/config.json"


def valid_id(key):
    """True if key may be a meter id: 1 to 32 ASCII letters, digits, '-' or '_'. The one rule
    for meter ids (the head-end and the scenario schema import it): an id goes into MQTT
    topic names (meters/<id>/...) and the broker's ACL patterns, so no '/', '+', '#', no
    space, nothing outside ASCII."""
    if type(key) is not str or not 0 < len(key) <= 32:
        return False
    for c in key:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "-" or c == "_"):
            return False
    return True


def problem(key, v):
    """What is wrong with v as config key's value, in words (None: nothing); its type is
    checked before."""
    if key == "meter_id":
        return None if valid_id(v) else "must be 1 to 32 letters (a-z, A-Z), digits, - or _"
    i = RANGES.find(key + " ")
    if i < 0 or (i and RANGES[i - 1] != "\n"):
        return None
    r = RANGES[i:RANGES.find("\n", i)].split()
    if type(v) is str:
        if not int(r[1]) <= len(v) <= int(r[2]):
            return "must have %s to %s characters" % (r[1], r[2])
    elif not int(r[1]) <= v <= int(r[2]):
        return "must be %s to %s" % (r[1], r[2])
    if key == "profile_period_s" and 86400 % v:
        return "must divide a day"
    return None


def load(fs):
    cfg = dict(DEFAULTS)
    try:
        with fs.open(PATH, "r") as f:
            text = f.read(4097)  # a larger file is refused unread (the heap)
        if len(text) > 4096:
            return cfg, "config.json is over 4096 bytes"
        stored = json.loads(text)
    except OSError:
        return cfg, None
    except ValueError:
        return cfg, "config.json is not valid JSON"
    if not isinstance(stored, dict):
        return cfg, "config.json is not an object"
    for key in stored:
        if key not in DEFAULTS:
            return cfg, "unknown config key " + key
        if type(stored[key]) is not type(DEFAULTS[key]):
            return cfg, "config key " + key + " has the wrong type"
        why = problem(key, stored[key])
        if why is not None:
            return cfg, "config key " + key + " " + why
    cfg.update(stored)
    return cfg, None


def save(fs, overrides):
    with fs.open(PATH + ".tmp", "w") as f:
        f.write(json.dumps(overrides))
    fs.rename(PATH + ".tmp", PATH)
