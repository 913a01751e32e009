"""Secure aggregation (SecAgg+): the collector learns the sum of a round's quantized updates and
nothing about any one of them. Pure Python, numpy and `cryptography`; no TensorFlow, no Flask.

    shamir    Shamir sharing over GF(2^256 + 297)
    graph     the k-regular neighbour graph and its (k, t) from n, dropout and a security margin
    crypto    X25519 + HKDF + AES-GCM shares, AES-CTR mask expansion, signed key advertisements
    ring      clipping, stochastic rounding into Z_(2^b), discrete Gaussian noise, packing
    client    a device's four stages;  server  the server's four stages and the unmasking
"""
