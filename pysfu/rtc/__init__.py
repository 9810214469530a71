"""The room domain: pure state and transitions, no Trio, no engine, no sockets.

Everything here takes time as an input and returns :class:`~pysfu.rtc.effects.Effects`
values for the runtime to carry out, so hypothesis can drive it without I/O.
"""
