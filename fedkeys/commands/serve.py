"""Serve the update collector (Flask app under gunicorn) for a phone bundle.

`fedkeys serve --bundle BUNDLE --state STATE_DIR [--port 8000]` runs in the foreground on
127.0.0.1 until interrupted; round state lives in STATE_DIR (SQLite and model versions).

When the collector requires device attestation (`collector.attestation`, default "required") and
no issuer public key is configured, a simulated platform issuer is made: the collector gets its
public key, and its secret key is written to OUT/attestation_issuer.key for the phones
(`fedkeys devices --server URL --issuer-key OUT/attestation_issuer.key`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from fedkeys.commands.common import stage_config, start, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="a directory made by `fedkeys export`")
    p.add_argument("--state", help="state directory (default: OUT/state)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: server.port, 0 = a free one)")


def run(args: argparse.Namespace) -> int:
    from server.process import write_server_config
    from server.serve import gunicorn_argv, listening_socket

    cfg = stage_config(args, args.bundle)
    server = cfg.server
    if args.host or args.port is not None:
        server = dataclasses.replace(server, host=args.host or server.host,
                                     port=server.port if args.port is None else args.port)
    args.out = args.out or os.path.join(args.bundle, "serve")
    cfg = dataclasses.replace(cfg, server=server)
    issuer_path = None
    if cfg.collector.attestation == "required" and not cfg.collector.attestation_public_key:
        from fedmath.attestation import Issuer

        issuer = Issuer.generate()
        issuer_path = issuer.save(os.path.join(args.out, "attestation_issuer.key"))
        cfg = dataclasses.replace(cfg, collector=dataclasses.replace(cfg.collector,
                                                                     attestation_public_key=issuer.public_hex))
    start(args, cfg)
    state = args.state or os.path.join(args.out, "state")
    config_path = write_server_config(os.path.join(args.out, "server.json"), cfg, args.bundle, state)
    sock = listening_socket(server.host, server.port)  # a free port for 0; held through exec by gunicorn
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    url = f"http://{server.host}:{port}"
    write_summary(args.out, {"stage": "serve", "url": url, "state_dir": os.path.abspath(state),
                             "attestation_issuer_key": issuer_path and os.path.abspath(issuer_path)})
    print(f"serve: {url} (state {state}); Ctrl-C stops it", flush=True)
    if issuer_path:
        print(f"serve: phones' attestation issuer (simulated platform): secret key in {issuer_path}", flush=True)
    cmd = gunicorn_argv(config_path, sock.fileno(), server.workers, server.threads)
    os.execv(cmd[0], cmd)  # gunicorn takes over this process, so signals reach it directly
    return 0  # not reached
