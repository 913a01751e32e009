"""Pure numpy kernels shared by the device simulator and the server.

Nothing here imports TensorFlow, TFF, Flask or HTTP code, so the same functions run in
simulation, on the (simulated) phone and in the collector, and tests check them on
numbers worked out by hand.
"""
