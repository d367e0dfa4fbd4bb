"""The two pages people look at results with, as FastAPI apps over plain HTML and JavaScript
(``cluster/static``; no build step, no CDN, works offline):

- ``viewer_app``: the episode viewer over a runs folder (``cluster.viewer_data``).
- ``rating_app``: the blind rating page over a ``RatingStore``, with its results.

Both bind to 127.0.0.1 by default; on any other host a token is required, given as
``?token=`` (the pages pass it on) or ``Authorization: Bearer``. Bad input is a 4xx with a
message: ``{"error": ...}``.
"""
from __future__ import annotations

import csv
import io
import threading
from importlib import resources
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from cluster.serve_auth import is_loopback
from cluster.rating_store import REASONS, RatingError, RatingStore
from cluster.viewer_data import RunsView, ViewerError


def check_bind(host: str, token: Optional[str]) -> None:
    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to serve on {host} without a token: pass --token (anyone who can reach "
                         f"{host} could read the runs and write ratings)")


def _page(name: str) -> str:
    return resources.files("cluster").joinpath("static", name).read_text()


def _guard(app: FastAPI, token: Optional[str]) -> None:
    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token:
            given = request.query_params.get("token") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if given != token:
                return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return await call_next(request)


def viewer_app(runs, token: Optional[str] = None) -> FastAPI:
    view = RunsView(runs)  # a missing or foreign folder fails here, before serving
    app = FastAPI(title="AnomalyAgent episode viewer")
    _guard(app, token)

    @app.exception_handler(ViewerError)
    async def _viewer_error(request, e: ViewerError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return _page("viewer.html")

    @app.get("/api/stores")
    def stores():
        return {"runs": str(view.runs), "stores": view.summary()}

    @app.get("/api/episodes")
    def episodes(store: str, category: Optional[str] = None, defect_type: Optional[str] = None,
                 source: Optional[str] = None, status: Optional[str] = None, reward_min: Optional[float] = None,
                 reward_max: Optional[float] = None, checkpoint: Optional[str] = None):
        rows = view.episodes(store, category, defect_type, source, status, reward_min, reward_max, checkpoint)
        return {"store": store, "episodes": rows}

    @app.get("/api/episode")
    def episode(store: str, id: str):
        return view.episode(store, id)

    @app.get("/api/group")
    def group(store: str, group: str):
        return {"store": store, "group": group, "episodes": view.group(store, group)}

    @app.get("/api/file")
    def file(store: str, path: str):
        return FileResponse(view.file(store, path))

    return app


def results(store: RatingStore) -> dict:
    from benchmarks.human_eval import agreement, good_rates

    r = store.ratings()
    return {"ratings": len(r), "by_source": good_rates(r, ["source"]),
            "by_category": good_rates(r, ["source", "category", "defect"]), "agreement": agreement(r)}


def results_png(res: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["by_source"]
    fig, ax = plt.subplots(figsize=(4 + 0.6 * len(rows), 3))
    xs = range(len(rows))
    ax.bar(xs, [r["rate"] for r in rows], color="#4c8")
    ax.errorbar(xs, [r["rate"] for r in rows], yerr=[[r["rate"] - r["low"] for r in rows], [r["high"] - r["rate"] for r in rows]],
                fmt="none", ecolor="k", capsize=4)
    ax.set_xticks(list(xs), [f"{r['source']}\n(n={r['ratings']})" for r in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("good-sample rate (Wilson 95 %)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def results_csv(res: dict) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["source", "category", "defect", "ratings", "good", "rate", "wilson_low", "wilson_high"])
    for r in res["by_source"]:
        w.writerow([r["source"], "(all)", "(all)", r["ratings"], r["good"], f"{r['rate']:.4f}", f"{r['low']:.4f}", f"{r['high']:.4f}"])
    for r in res["by_category"]:
        w.writerow([r["source"], r["category"], r["defect"], r["ratings"], r["good"], f"{r['rate']:.4f}",
                    f"{r['low']:.4f}", f"{r['high']:.4f}"])
    return out.getvalue()


def rating_app(store: RatingStore, token: Optional[str] = None) -> FastAPI:
    app = FastAPI(title="AnomalyAgent blind rating")
    _guard(app, token)

    @app.exception_handler(RatingError)
    async def _rating_error(request, e: RatingError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return _page("rate.html")

    @app.get("/api/next")
    def next_sample(rater: str):
        return {**store.next_for(rater), "reasons": list(REASONS)}

    @app.get("/api/image/{sample}")
    def image(sample: str):
        return FileResponse(store.sample(sample)["image"])

    @app.get("/api/mask/{sample}")
    def mask(sample: str):
        return FileResponse(store.sample(sample)["mask"])

    @app.post("/api/rate")
    async def rate(request: Request):
        try:
            body = await request.json()
        except ValueError:
            raise RatingError(400, "body must be JSON: {rater, sample, verdict, reason?}") from None
        if not isinstance(body, dict) or not {"rater", "sample", "verdict"} <= set(body):
            raise RatingError(422, "body needs rater, sample and verdict")
        store.rate(body["rater"], str(body["sample"]), body["verdict"], body.get("reason"))
        return {"ok": True, **store.next_for(body["rater"])}

    @app.get("/api/results")
    def results_json():
        return results(store)

    @app.get("/api/results.csv")
    def results_file():
        return Response(results_csv(results(store)), media_type="text/csv")

    @app.get("/api/results.png")
    def results_plot():
        return Response(results_png(results(store)), media_type="image/png")

    return app


class ServerThread:
    """A uvicorn server in a thread (tests, and the Serve-less commands): ``url`` once started."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server failed to start")
            self.thread.join(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
