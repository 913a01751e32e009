"""Simulated phones: on-device training through TFLite, clipping, noise, encoding, HTTP uploads.

    transport.py  the /v1 HTTP client (bytes in, bytes out; urllib3 retries, Retry-After)
    phone.py      one phone: check in, download (cached), train, clip, noise, encode, upload
    fleet.py      K phones for R rounds on a thread pool (run_devices), evaluation hook
    day.py        a simulated day: diurnal availability, profiles, dropouts, stragglers
    parity.py     the same rounds through TFF and through phones + collector, compared
    inprocess.py  the real collector app in this process, reached through the phones' transport

The numeric kernels (clip, noise, encodings, error feedback, availability) live in `fedmath`,
shared with the server and the TFF simulation. device_sim reaches the server only over HTTP.
"""
