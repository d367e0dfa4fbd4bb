"""The episode viewer and the blind rating page, over real HTTP on 127.0.0.1, on real Parquet
stores and a real SQLite file; the rating server is killed mid-rating and loses nothing."""
import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cluster.rating_store import RatingStore, generated_samples, real_samples
from cluster.viewer_data import ViewerError
from cluster.web_pages import ServerThread, check_bind, rating_app, viewer_app
from rollout.data import open_dataset

ROOT = Path(__file__).resolve().parents[2]


def _digest(root: Path):
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_viewer_over_http_filters_opens_and_compares_and_never_writes(runs):
    before = _digest(runs)
    with ServerThread(viewer_app(runs)) as s, httpx.Client(base_url=s.url) as c:
        assert "<title>AnomalyAgent episodes</title>" in c.get("/").text
        stores = {x["store"]: x["episodes"] for x in c.get("/api/stores").json()["stores"]}
        assert stores == {"train/trajectories": 2, "gen/trajectories": 1}
        rows = c.get("/api/episodes", params={"store": "train/trajectories"}).json()["episodes"]
        assert [(r["status"], r["reward"], r["checkpoint"]) for r in rows] == [("turn_cap", 0.5, "step_0"), ("answer", 1.5, "step_0")]
        assert len(c.get("/api/episodes", params={"store": "train/trajectories", "reward_min": 1.0}).json()["episodes"]) == 1
        assert c.get("/api/episodes", params={"store": "train/trajectories", "status": "answer"}).json()["episodes"][0]["episode_id"].endswith("g1")
        assert c.get("/api/episodes", params={"store": "train/trajectories", "checkpoint": "step_9"}).json()["episodes"] == []
        gen = c.get("/api/episodes", params={"store": "gen/trajectories", "source": "agent"}).json()["episodes"]
        assert [(g["category"], g["delivered"], g["knowledge"]) for g in gen] == [("syn_marble", True, "shipped")]
        e = c.get("/api/episode", params={"store": "train/trajectories", "id": "s0-syn_pill-crack-0-g1"}).json()
        assert e["decoded"] and "I need a prompt for the crack." in e["turns"][0]["text"]
        assert e["turns"][1]["arguments"] == {"prompt": "a dark crack"} and "Done." in e["answer_text"]
        assert e["reward"]["advantage"] == pytest.approx(0.707) and e["images"][1]["qe"]["pass"] is True
        png = c.get("/api/file", params={"store": "train/trajectories", "path": e["images"][1]["mask"]})
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        group = c.get("/api/group", params={"store": "train/trajectories", "group": "s0-syn_pill-crack-0"}).json()["episodes"]
        assert [round(g["advantage"], 3) for g in group] == [-0.707, 0.707] and group[1]["final_image"]["index"] == 1
        for path, params, status in [("/api/episodes", {"store": "elsewhere"}, 404),
                                     ("/api/file", {"store": "train/trajectories", "path": "../../gen/summary.json"}, 404),
                                     ("/api/episode", {"store": "train/trajectories", "id": "../x"}, 400),
                                     ("/api/episode", {"store": "train/trajectories", "id": "nope"}, 404),
                                     ("/api/group", {"store": "train/trajectories", "group": "nope"}, 404)]:
            r = c.get(path, params=params)
            assert r.status_code == status and r.json()["error"], (path, params)
    assert _digest(runs) == before  # read as they are, never rewritten
    with pytest.raises(ViewerError, match="runs folder not found"):
        viewer_app(runs / "missing")
    with pytest.raises(ViewerError, match="no trajectories under"):
        viewer_app(runs / "train" / "checkpoints")


def test_off_loopback_needs_a_token_and_requests_carry_it(runs):
    with pytest.raises(ValueError, match="without a token"):
        check_bind("0.0.0.0", None)
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "s3cret")
    with ServerThread(viewer_app(runs, token="s3cret")) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/api/stores").status_code == 401
        assert c.get("/api/stores", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/stores", params={"token": "s3cret"}).status_code == 200
        assert c.get("/api/stores", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_blind_rating_over_http(samples, syn_root, tmp_path):
    store = RatingStore(tmp_path / "ratings.db")
    pool = generated_samples(samples / "agent", "agent") + generated_samples(samples / "fixed", "baseline")
    pool += real_samples(open_dataset("mvtec", syn_root), {("syn_pill", "crack"): 3})
    assert store.add_samples(pool) == 8 and store.add_samples(pool) == 0  # a restart keeps the pool
    with ServerThread(rating_app(store)) as s, httpx.Client(base_url=s.url) as c:
        assert "blind rating" in c.get("/").text
        first = c.get("/api/next", params={"rater": "ann"}).json()
        assert first["total"] == 8 and first["rated"] == 0 and "wrong type" in first["reasons"]
        assert set(first) == {"sample", "rated", "total", "reasons"}  # no source, no path: blind
        assert c.get(f"/api/image/{first['sample']}").content[:4] == b"\x89PNG"
        seen = []
        for rater in ("ann", "bob"):
            nxt = c.get("/api/next", params={"rater": rater}).json()
            while nxt["sample"]:
                sid = nxt["sample"]
                verdict = "good" if store.sample(sid)["source"] != "baseline" else "bad"
                r = c.post("/api/rate", json={"rater": rater, "sample": sid, "verdict": verdict,
                                              "reason": None if verdict == "good" else "wrong type"})
                assert r.status_code == 200, r.text
                seen.append((rater, sid))
                nxt = r.json()
        assert len(seen) == 16 and [s for r, s in seen if r == "ann"] != [s for r, s in seen if r == "bob"]  # own orders
        sid = seen[0][1]
        for body, status in [({"rater": "ann", "sample": "feedbeef0000", "verdict": "good"}, 404),
                             ({"rater": "ann", "sample": sid, "verdict": "maybe"}, 422),
                             ({"rater": "ann", "sample": sid, "verdict": "bad", "reason": "ugly"}, 422),
                             ({"rater": "a b", "sample": sid, "verdict": "bad"}, 422),
                             ({"rater": "ann", "sample": sid, "verdict": "bad"}, 409)]:
            r = c.post("/api/rate", json=body)
            assert r.status_code == status and r.json()["error"], body
        assert c.post("/api/rate", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
        res = c.get("/api/results").json()
        assert res["ratings"] == 16  # the duplicate counted once
        rates = {r["source"]: (r["ratings"], r["rate"]) for r in res["by_source"]}
        assert rates == {"agent": (6, 1.0), "baseline": (4, 0.0), "real": (6, 1.0)}
        assert res["agreement"]["fleiss_kappa"] == pytest.approx(1.0) and res["agreement"]["cohen_kappa"] == pytest.approx(1.0)
        csv_text = c.get("/api/results.csv").text
        assert csv_text.splitlines()[0].startswith("source,category,defect,ratings,good,rate,wilson_low")
        assert "baseline,(all),(all),4,0,0.0000,0.0000," in csv_text
        assert c.get("/api/results.png").content[:4] == b"\x89PNG"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_rating(samples, db, port):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "rate", "--samples", str(samples / "agent"),
                             "--out", str(db), "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # the server prints its address once it is bound
        if line.startswith("blind rating at"):
            return proc
    raise AssertionError(f"the rating server did not start (rc {proc.wait()})")


def test_a_killed_rating_server_loses_nothing_and_the_rater_resumes(samples, tmp_path):
    db, port = tmp_path / "ratings.db", _free_port()
    proc = _start_rating(samples, db, port)
    url = f"http://127.0.0.1:{port}"
    try:
        rated = []
        for _ in range(2):
            sid = httpx.get(f"{url}/api/next", params={"rater": "ann"}).json()["sample"]
            assert httpx.post(f"{url}/api/rate", json={"rater": "ann", "sample": sid, "verdict": "good"}).status_code == 200
            rated.append(sid)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-rating: no shutdown, no flush
        proc.wait()
    proc = _start_rating(samples, db, port)
    try:
        nxt = httpx.get(f"{url}/api/next", params={"rater": "ann"}).json()
        assert nxt["rated"] == 2 and nxt["total"] == 3 and nxt["sample"] not in rated
        assert sorted(r["sample"] for r in RatingStore(db).ratings()) == sorted(rated)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_rate_refuses_bad_input_with_one_line(tmp_path, capsys):
    from cluster.cli import main

    assert main(["rate", "--samples", str(tmp_path / "none"), "--out", str(tmp_path / "r.db")]) == 2
    assert "samples folder not found" in capsys.readouterr().err
    assert main(["rate", "--samples", str(tmp_path), "--out", str(tmp_path / "r.db"), "--mix", "real,fake"]) == 2
    assert "--mix takes real and/or baseline, got fake" in capsys.readouterr().err
    assert main(["rate", "--samples", str(tmp_path), "--out", str(tmp_path / "r.db"), "--host", "0.0.0.0"]) == 2
    assert "without a token" in capsys.readouterr().err
    assert main(["view", "--runs", str(tmp_path / "none")]) == 2
    assert "runs folder not found" in capsys.readouterr().err
