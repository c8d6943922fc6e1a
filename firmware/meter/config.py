# Meter configuration: defaults here, provisioned overrides in /config.json on the data
# filesystem. Unknown keys are refused so a typo never silently keeps a default.
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
    "checkpoint_wh": 10,  # ... and as soon as this much is unsaved (at most once a minute)
    "checkpoint_min_s": 60,
}

PATH = "/config.json"


def load(fs):
    cfg = dict(DEFAULTS)
    try:
        with fs.open(PATH, "r") as f:
            stored = json.loads(f.read())
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
    cfg.update(stored)
    return cfg, None


def save(fs, overrides):
    with fs.open(PATH + ".tmp", "w") as f:
        f.write(json.dumps(overrides))
    fs.rename(PATH + ".tmp", PATH)
