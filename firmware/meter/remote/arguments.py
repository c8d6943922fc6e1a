# Argument checks shared by the command groups (meter/remote/config_commands.py,
# time_commands.py, read_commands.py): loaded with the group that runs a command, dropped
# with it (meter/remote/commands.py). Each handler checks every argument first and answers
# (code, extra for the ack): 250 "bad args: ..." for an unknown key, a wrong type or a value
# out of range; 3 with a reason when the meter's state refuses it.


class Refused(Exception):
    """(code, reason): the command is answered with it, nothing was changed."""


def bad(what):
    raise Refused(250, "bad args: " + what)


def only(args, keys):
    for k in args:
        if k not in keys:
            bad("unknown argument " + str(k))


def whole(args, key, lo, hi, default=None):
    v = args.get(key, default)
    if type(v) is not int or not lo <= v <= hi:  # type(True) is bool, not int
        bad("%s must be a whole number %d-%d" % (key, lo, hi))
    return v


def log(cmds, code, value=0, now=None):
    try:
        now = cmds._clock.now() if now is None else now
        cmds._log.log(now if now > 0 else 0, code, value)  # an unset clock reads < 0
    except OSError:
        pass  # the command took effect; a full or failing log does not undo it
