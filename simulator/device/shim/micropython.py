# `micropython` for CPython: the few helpers firmware modules import from it.


def const(value):
    return value


def native(fn):
    return fn


def viper(fn):
    return fn


def alloc_emergency_exception_buf(size):
    pass


def schedule(fn, arg):
    fn(arg)


def mem_info(verbose=False):
    pass
