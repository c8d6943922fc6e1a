# The calibration record: register values for the metering IC, with the IC's checksums,
# in its own file on the data partition (never in config, never in the firmware image), so
# re-deploying firmware or re-provisioning keeps it. Written by the end-of-line procedure.
import json

PATH = "/calib.json"


def load(fs, ic):
    """(register dict or None, error text or None). A record whose checksums do not match
    what the IC driver computes for it is refused: the IC would stop metering with it."""
    try:
        with fs.open(PATH, "r") as f:
            rec = json.loads(f.read())
    except OSError:
        return None, None
    except ValueError:
        return None, "calib.json is not valid JSON"
    if not isinstance(rec, dict) or rec.get("ic") != ic.NAME:
        return None, "calib.json is not for this IC"
    regs = {}
    raw = rec.get("regs")
    if not isinstance(raw, dict):
        return None, "calib.json has no registers"
    for key in raw:
        value = raw[key]
        if type(value) is not int or not 0 <= value < 0x1000000:
            return None, "calib.json register " + key + " out of range"
        regs[int(key)] = value
    if list(ic.checksums(regs)) != rec.get("cs", []):
        return None, "calib.json checksum mismatch"
    return regs, None


def save(fs, ic, regs, extra=None):
    rec = {"ic": ic.NAME, "regs": {}, "cs": list(ic.checksums(regs))}
    for addr in regs:
        rec["regs"][str(addr)] = regs[addr]
    if extra:
        rec["ref"] = extra
    with fs.open(PATH + ".tmp", "w") as f:
        f.write(json.dumps(rec))
    fs.rename(PATH + ".tmp", PATH)
