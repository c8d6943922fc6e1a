# Runs before main.py on every reset. Kept minimal: the data filesystem is mounted by the
# board in main.py, so a damaged data partition never stops the REPL from coming up.
import gc

gc.collect()
