"""Serving a reward model over HTTP: ``rewardkit serve RUN`` (FastAPI + uvicorn, dynamic batching).

``serve(cfg)`` loads the scorer ``--model`` names (classifier RM, plain HF reward model, judge or GenRM run;
``rewardkit.inference.factory.load_scorer``), builds the app (``rewardkit.serve.app``) and runs uvicorn until
SIGINT/SIGTERM, then finishes queued requests and exits. ``running_server`` runs the same app on a
background thread (tests, benchmarks, notebooks) and yields its base URL.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rewardkit.config import ServeConfig
from rewardkit.errors import UserError
from rewardkit.inference import Scorer
from rewardkit.inference.factory import say_precision


def load_served_scorer(cfg: ServeConfig) -> Scorer:
    from rewardkit.inference.factory import load_scorer

    if not cfg.model:
        raise UserError("serve needs a model: rewardkit serve RUN (a run folder, HF reward model, or --judge LM)")
    return load_scorer(cfg.model, cfg, max_length=cfg.max_length, template=cfg.template,
                       max_batch_tokens=cfg.max_batch_tokens, seed=cfg.seed, prefix_sharing=cfg.prefix_sharing,
                       complete_turn=cfg.complete_turn, device=cfg.device, aspect_weights=cfg.aspect_weights,
                       precision=cfg.precision, route=cfg.route, aggregate=cfg.aggregate,
                       step_marker=cfg.step_marker)


def _server(scorer: Scorer, cfg: ServeConfig):
    import uvicorn

    from rewardkit.serve.app import create_app

    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror}; pick another --port "
                         "(0 picks a free one)") from None
    # A large backlog: a burst of clients connecting at once must queue in the kernel, not be refused.
    sock.listen(2048)
    config = uvicorn.Config(create_app(scorer, cfg), log_level="warning", timeout_graceful_shutdown=30,
                            backlog=2048)
    return uvicorn.Server(config), sock


def serve(cfg: ServeConfig) -> None:
    """Run the server in the foreground until interrupted."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    scorer = load_served_scorer(cfg)
    say_precision(scorer, "serve")
    server, sock = _server(scorer, cfg)
    host, port = sock.getsockname()[:2]
    print(f"rewardkit serve: {scorer.name} on http://{host}:{port} (docs: http://{host}:{port}/docs); "
          f"dynamic batching {'on' if cfg.dynamic_batching else 'off'}", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM (queued requests are answered, the batcher drained), then
    # re-raises the signal to the handler that was there before it; a no-op one lets the command exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    print("rewardkit serve: stopped", file=sys.stderr, flush=True)


@contextmanager
def running_server(scorer: Scorer, cfg: ServeConfig | None = None) -> Iterator[str]:
    """Serve ``scorer`` on a background thread (port 0: a free one) → its base URL; stops on exit."""
    cfg = cfg or ServeConfig(port=0)
    server, sock = _server(scorer, cfg)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the reward server did not start")
        time.sleep(0.01)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
