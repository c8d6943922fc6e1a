# The configuration's rules: an overlay that meter/storage/config.py load() imports at boot, when
# /config.json has overrides, and unloads after (the heap). valid_id is the one rule for
# meter ids; the head-end and the scenario schema import this module on CPython too.
# Few names and no short strings here: each is a qstr, in the heap for good once loaded (15
# of them, one-character strings included, crossed a qstr pool step: +7 KB heap at boot).

# Each number's range, each string's length range (both ends included): key, lo, hi.
# Booleans have none; load_limiter is meter/supply/startup.py's check_limiter; meter_id valid_id.
# One string, which stays in the ROMFS image (a tuple of them took 960 B of heap).
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
def valid_id(key):
    """True if key may be a meter id: 1 to 32 ASCII letters, digits, '-' or '_'. The one rule
    for meter ids (the head-end and the scenario schema import it): an id goes into MQTT
    topic names (meters/<id>/...) and the broker's ACL patterns, so no '/', '+', '#', no
    space, nothing outside ASCII."""
    if type(key) is not str or not 0 < len(key) <= 32:
        return False
    for c in key:
        c = ord(c)  # numbers, not one-character strings: each of those would be a qstr
        if not (97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 45 or c == 95):
            return False
    return True


def check(stored):
    """What is wrong with the provisioned overrides (their keys and types already checked),
    in words, or None."""
    for key in stored:
        v = stored[key]
        if key == "meter_id":
            if not valid_id(v):
                return "config key meter_id must be 1 to 32 letters (a-z, A-Z), digits, - or _"
            continue
        i = RANGES.find(key + " ")
        if i < 0 or (i and RANGES[i - 1] != "\n"):
            continue
        r = RANGES[i:RANGES.find("\n", i)].split()
        if type(v) is str:
            if not int(r[1]) <= len(v) <= int(r[2]):
                return "config key %s must have %s to %s characters" % tuple(r)
        elif not int(r[1]) <= v <= int(r[2]):
            return "config key %s must be %s to %s" % tuple(r)
        elif key == "profile_period_s" and 86400 % v:
            return "config key profile_period_s must divide a day"
    return None
