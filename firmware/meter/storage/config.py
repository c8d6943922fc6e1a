# Meter configuration: defaults here, provisioned overrides in /config.json on the data
# filesystem. Unknown keys are refused so a typo never silently keeps a default; so is a
# value outside its range or a meter id outside the id rule (meter/storage/config_rules.py, an
# overlay).
import json


def defaults():
    """The configuration before overrides, a new dict at each call: built only when asked
    for, since a module-level dict would take ~1 KB of heap whenever this overlay loads
    (to save a change, say)."""
    return {
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
        # supply control (meter/supply/control.py, meter/supply/relay.py, meter/supply/limiter.py)
        "control_mode": 1,  # DLMS disconnect control mode 0-6, until one is persisted
        "relay_retries": 2,
        "relay_ops_per_min": 6,
        "load_limit_w": 0,  # 0: no load limiter
        "tamper_disconnect": False,  # open terminal cover: local disconnect (g)
        "load_limiter": {},  # the limiter's other settings (meter/supply/startup.py LIMITER)
        "vref_v": 240,  # ratings: reference voltage and maximum current (Ib: calibration)
        "imax_a": 60,
        "import_only": False,  # export is then a tamper signal (reverse flow)
    }


PATH = "/config.json"


def load(fs):
    cfg = defaults()
    try:
        with fs.open(PATH, "r") as f:
            stored = f.read(4097)  # a larger file is refused unread (the heap)
        if len(stored) > 4096:
            return cfg, "config.json is over 4096 bytes"
        stored = json.loads(stored)
    except OSError:
        return cfg, None
    except ValueError:
        return cfg, "config.json is not valid JSON"
    if not isinstance(stored, dict):
        return cfg, "config.json is not an object"
    for key in stored:
        if key not in cfg:
            return cfg, "unknown config key " + key
        if type(stored[key]) is not type(cfg[key]):
            return cfg, "config key " + key + " has the wrong type"
    if stored:
        from meter.runtime.overlays import unload
        from meter.storage import config_rules

        try:
            why = config_rules.check(stored)
        finally:
            unload("meter.storage.config_rules")
        if why is not None:
            return cfg, why
    cfg.update(stored)
    return cfg, None


def save(fs, overrides):
    with fs.open(PATH + ".tmp", "w") as f:
        f.write(json.dumps(overrides))
    fs.rename(PATH + ".tmp", PATH)
