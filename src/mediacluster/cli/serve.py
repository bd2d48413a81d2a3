"""``mediacluster serve MODEL_OR_RUN``: an HTTP service that assigns new images, audio clips
(an audio model) or vectors to the clusters of a saved model (see ``mediacluster.serve``). Loads the model and its encoder once,
then answers ``POST /v1/assign`` in milliseconds; switches to a newer model version (published
by ``cluster --save-model``, ``tune`` or the studio) without dropping a request.
"""

from __future__ import annotations

import os
import sys

from . import SUMMARIES, add_collection_root, printable
from .cluster import _parsed, non_negative_float, positive_int


def _positive_float(text: str) -> float:
    import argparse

    v = _parsed(text, float, "a number")
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _megabytes(text: str) -> float:
    """A positive size in MiB whose bytes are a number (1e308 MiB is infinitely many bytes)."""
    import argparse

    v = _positive_float(text)
    if v * 2**20 == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a size in MiB up to 1e300, got {text}")
    return v


def _probability(text: str) -> float:
    import argparse

    v = _parsed(text, float, "a number")
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def add_parser(sub):
    p = sub.add_parser("serve", help=SUMMARIES["serve"])
    p.add_argument("model", help="a run folder or its models/ folder (watched: newer versions are "
                                 "switched to), or one model version folder (pinned)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any "
                   "other address needs an access token, generated unless --token is given)")
    p.add_argument("--port", type=int, default=8000, help="port (0: a free one; the URL is printed)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes sharing the port, each with its own model and encoder "
                        "(default 1: on few cores one process batching the encoder is faster)")
    p.add_argument("--token", default=None, help="access token clients send as 'Authorization: "
                   "Bearer TOKEN' (default: none on loopback, a random one elsewhere)")
    p.add_argument("--read-token", default=None, help="a second token that may only read: "
                   "/v1/assign, /v1/similar, /v1/clusters, /v1/model, /metrics; POST /v1/reload with it is "
                   "a 403 (for a team that predicts while another publishes; a --token is made and "
                   "printed when none is given)")
    add_collection_root(p, "with a model saved with --dedup: the geometric near-duplicate check reads its "
                           "training files")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="a web origin (https://app.example, or *) whose pages may call the service from a "
                   "browser (CORS; repeatable; default: none, browsers refuse cross-site calls); the "
                   "token is still needed where one is set")
    p.add_argument("--tags", default=None, metavar="TAG_MODEL",
                   help="a tag model (`mediacluster tags train`) trained on the same encoder: each "
                        "answer then carries suggested tags, or none when the tagger abstains")
    g = p.add_argument_group("limits (each refused request gets a 4xx JSON error naming the problem)")
    g.add_argument("--max-files", type=positive_int, default=64, help="images per request")
    g.add_argument("--max-vectors", type=positive_int, default=4096, help="vectors per request")
    g.add_argument("--max-file-mb", type=_megabytes, default=20.0, help="size of one upload")
    g.add_argument("--max-body-mb", type=_megabytes, default=128.0, help="size of one request")
    g.add_argument("--time-limit", type=_positive_float, default=30.0,
                   help="seconds a request may take before it is answered 503")
    b = p.add_argument_group("encoder batching")
    b.add_argument("--batch-size", type=positive_int, default=32,
                   help="most images per encoder call")
    b.add_argument("--batch-window-ms", type=non_negative_float, default=2.0,
                   help="longest wait for the images of requests still being received, once one "
                        "is queued (never waits when no other request is under way)")
    b.add_argument("--encode-workers", type=positive_int, default=None,
                   help="threads that decode, encode and answer batches of images (default: the "
                        "encoder's own concurrency)")
    k = p.add_argument_group("inbox: keep the uploads the service could not place (off by default)")
    k.add_argument("--keep-uploads", default=None, metavar="DIR",
                   help="keep the answered uploads the --keep rule picks in DIR: DIR/files/<content "
                        "hash>.<ext> (once per content; a collection: `mediacluster cluster DIR/files`) "
                        "and one row each in DIR/inbox.sqlite (time, model version, the answer, the "
                        "client's file name, size, hash); written after the answer, never failing it")
    k.add_argument("--keep", action="append", choices=("novel", "uncertain", "junk", "all"), default=None,
                   help="which answers are kept (repeatable; default novel): novel (a kind the "
                        "collection lacks), uncertain (membership probability below --keep-below: "
                        "also every noise and outlier answer), junk (a cluster marked junk), all")
    k.add_argument("--keep-below", type=_probability, default=0.5, metavar="P",
                   help="--keep uncertain keeps answers whose probability is below P (default 0.5)")
    k.add_argument("--keep-novelty", type=_probability, default=None, metavar="T",
                   help="--keep novel also keeps answers whose novelty is at least T (0..1; e.g. 0.95: "
                        "about 5%% of uploads of the collection's own kinds, and more of the kinds it "
                        "lacks than the novel flag's 1%% rule); implies --keep novel")
    k.add_argument("--keep-max-mb", type=_megabytes, default=None, metavar="MB",
                   help="stored megabytes at most (MiB); beyond it new uploads are no longer kept "
                        "(logged once, mediacluster_inbox_full in /metrics) and the service keeps "
                        "answering (default: no bound)")
    p.add_argument("--poll", type=_positive_float, default=1.0,
                   help="seconds between two checks for a newer model version")
    return p


def run(args) -> int:
    from ..persist import resolve_model
    from ..pipeline import Pipeline
    from ..web import run_server
    from ..web.app import check_token, resolve_token

    given = [f for f, v in (("--keep", args.keep), ("--keep-novelty", args.keep_novelty),
                            ("--keep-max-mb", args.keep_max_mb)) if v is not None]
    if given and not args.keep_uploads:  # the rule of a folder that is not kept: passed over before
        from ..errors import ParameterError

        raise ParameterError(f"{', '.join(given)} choose{'s' if len(given) == 1 else ''} the uploads kept in "
                             "--keep-uploads DIR: give --keep-uploads too", given[0].lstrip("-").replace("-", "_"))
    token = resolve_token(args.host, args.token)
    check_token(args.read_token, "read-token")
    if args.read_token and not token:  # the writes need a token of their own
        import secrets

        token = secrets.token_urlsafe(24)
    if args.read_token and args.read_token == token:
        from ..errors import ParameterError

        raise ParameterError("--read-token must differ from --token", "read-token")
    config = {
        "source": os.path.abspath(args.model), "tags": args.tags and os.path.abspath(args.tags),
        "poll_s": args.poll, "max_batch": args.batch_size, "window_ms": args.batch_window_ms,
        "encode_workers": args.encode_workers, "max_files": args.max_files,
        "max_vectors": args.max_vectors, "max_file_bytes": int(args.max_file_mb * 2**20),
        "max_body_bytes": int(args.max_body_mb * 2**20), "time_limit_s": args.time_limit,
        "token": token, "read_token": args.read_token, "cors_origins": list(args.cors_origin or ()),
        "collection_root": args.collection_root and os.path.abspath(args.collection_root),
        "keep_uploads": args.keep_uploads and os.path.abspath(args.keep_uploads),
        "keep": sorted(set(args.keep or ["novel"]) | ({"novel"} if args.keep_novelty else set())),
        "keep_below": args.keep_below, "keep_novelty": args.keep_novelty,
        "keep_max_bytes": None if args.keep_max_mb is None else int(args.keep_max_mb * 2**20),
    }
    if args.keep_uploads:  # a folder that cannot be written stops here, once, not in every worker
        import sqlite3

        from ..fileio import output_error
        from ..inbox import open_db, summary

        try:
            open_db(args.keep_uploads).close()
            waiting = summary(args.keep_uploads)["contents"]["pending"]
        except OSError as e:
            raise output_error(e, args.keep_uploads) from None
        except sqlite3.Error as e:
            from ..errors import OutputError

            raise OutputError(f"{args.keep_uploads}: cannot open its inbox table ({e}); choose "
                              "another folder or move inbox.sqlite aside") from None
    name = "mediacluster serve"
    if args.keep_uploads:
        print(f"{name}: keeping uploads (--keep {' '.join(config['keep'])}"
              + (f", novelty >= {args.keep_novelty:g}" if args.keep_novelty else "")
              + f") in {printable(args.keep_uploads)}"
              + (f" (at most {args.keep_max_mb:g} MiB)" if args.keep_max_mb else "")
              + (f"; {waiting} pending review (`mediacluster inbox {printable(args.keep_uploads)}`)"
                 if waiting else ""), flush=True)
    if args.workers == 1:
        from ..serve import build_service

        app = build_service(config)
        cur = app.state.holder.current
        print(f"{name}: model {printable(cur.path)} ({len(cur.clusters)} clusters, encoder "
              f"{cur.encoder_name or 'none: vectors only'})" + (f", tags from {printable(args.tags)}"
                                                                if args.tags else ""))
        run_server(app, args.host, args.port, name=name, show_token=not args.token)
        return 0
    import json

    from ..serve.app import CONFIG_ENV
    from ..web.metrics import multiprocess_dir

    folder = resolve_model(args.model)
    Pipeline.load(folder)  # a broken model stops here, once, not in every worker
    if args.tags:
        from ..tags import Tagger

        Tagger.load(args.tags)
    os.environ[CONFIG_ENV] = json.dumps(config)
    metrics_dir = multiprocess_dir()
    print(f"{name}: model {printable(folder)}, {args.workers} worker processes", flush=True)
    try:
        run_server("mediacluster.serve.app:app_from_env", args.host, args.port, name=name,
                   workers=args.workers, token=token, show_token=not args.token)
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.stdout.flush()
    return 0
