# The two ways a boot of the simulated firmware ends. They derive from BaseException so that
# no `except Exception` in the firmware can swallow a power cut.


class PowerCut(BaseException):
    """Mains went away: the firmware loses its RAM at this very instruction."""


class ScenarioEnd(BaseException):
    """The scenario is over and its final readout has been taken."""
