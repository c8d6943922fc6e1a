# The meter's main program: the board builds the hardware, the meter runs its duty cycle.
import board
from meter.app import Meter

Meter(board.build()).run()
