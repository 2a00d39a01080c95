"""``centrifuge app``: a local web page for separating videos (see ``centrifuge.app``)."""

from __future__ import annotations

import argparse
import importlib.util

from ..errors import CentrifugeError
from ._common import add_shared_args, int_at_least


def _positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="a local web page: drop a video in, watch its layers come out",
                       description="Start a local web page to separate uploaded (or shipped) videos into layers "
                       "and to blend two clips and see how well the model un-mixes them. Needs the app extra: "
                       'pip install "visual-centrifuge[app]".')
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to others)")
    p.add_argument("--port", type=int_at_least(1), default=7860, help="port (default: 7860)")
    add_shared_args(p, "model", model="a model file or run folder the page offers besides the packaged one")
    p.add_argument("--max-upload-mb", type=_positive, default=500.0, metavar="MB",
                   help="largest upload accepted, in MB (default: 500)")
    p.add_argument("--max-seconds", type=_positive, default=600.0, metavar="S",
                   help="longest video accepted, in seconds (default: 600)")
    add_shared_args(p, "device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise CentrifugeError('the web page needs Gradio: pip install "visual-centrifuge[app]"')
    from ..app_server import serve
    from ..jobs import Limits

    return serve(args.host, args.port, model=args.model, device=args.device,
                 limits=Limits(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds))
