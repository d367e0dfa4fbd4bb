"""The ``anomalyagent`` command line.

Every command takes ``--config FILE`` (default: the CPU preset) followed by ``key=value``
overrides; the configuration is validated before any work starts.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from cluster.config import DEFAULT_CONFIG, AppConfig, ConfigError, load_config


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotlist overrides, e.g. seed=3")


def cmd_make_data(cfg: AppConfig, args) -> int:
    from rollout.data.synthetic import make_dataset

    t0 = time.perf_counter()
    root = make_dataset(args.out, seed=args.seed if args.seed is not None else cfg.seed, cfg=cfg.data.synthetic,
                        progress=True)
    print(f"synthetic MVTec-layout dataset written to {root} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_tiny_models(cfg: AppConfig, args) -> int:
    from policy.tiny import build_tiny_models

    paths = build_tiny_models(args.out, cfg.policy.tiny)
    for kind, path in paths.items():
        print(f"tiny {kind} model: {path}")
    return 0


def cmd_split(cfg: AppConfig, args) -> int:
    from cluster.assets import dataset_root
    from rollout.data import open_dataset
    from rollout.data.splits import dataset_split, write_split_lists

    root = args.data or dataset_root(cfg)
    ds = open_dataset(cfg.data.format, root, args.categories.split(",") if args.categories else None,
                      cfg.data.visa_type_table)
    for cat in ds.categories:
        where = write_split_lists(dataset_split(ds, cat), args.out)
        print(f"{cat}: split lists in {where}")
    return 0


def _preflight(cfg: AppConfig, data: Optional[str], out: Path) -> AppConfig:
    """The knowledge check of a command that works on the source and target categories,
    before Ray starts (cluster/knowledge_check.py)."""
    from cluster.assets import dataset_root
    from cluster.knowledge_check import prepare_knowledge
    from rollout.data import open_dataset

    root = Path(data or dataset_root(cfg))
    if not root.is_dir():  # nothing to check against: the command reports the missing dataset itself
        return cfg
    cats = list(dict.fromkeys([*cfg.data.source_categories, *cfg.data.target_categories]))
    ds = open_dataset(cfg.data.format, root, cats, cfg.data.visa_type_table)
    out.mkdir(parents=True, exist_ok=True)
    return prepare_knowledge(cfg, ds, ds.categories, list(cfg.data.target_categories), out)[0]


def cmd_knowledge(cfg: AppConfig, args) -> int:
    from actors.knowledge_files import add_entry, entry_from_dict, knowledge_with_overrides

    if args.action == "add":
        fields = {k: getattr(args, k) for k in ("category", "defect", "appearance", "location", "size", "colour",
                                                "shape", "kind", "contrast") if getattr(args, k) is not None}
        entry = entry_from_dict(fields, "knowledge add")
        replaced = add_entry(args.out, entry)
        print(f"{'replaced' if replaced else 'added'} {entry.category}/{entry.defect} in {args.out}; "
              f"use it with tools.knowledge.extra=[{args.out}]")
        return 0
    kb, overrides = knowledge_with_overrides(tuple(cfg.tools.knowledge.extra))
    replaced = {(e.category, e.defect): path for e, path in overrides}
    rows = [e for e in kb.entries if args.category is None or e.category == args.category]
    for e in sorted(rows, key=lambda e: (e.category, e.defect)):
        note = f"  (replaces the shipped entry; {replaced[(e.category, e.defect)]})" if (e.category, e.defect) in replaced else ""
        print(f"{e.category:<16} {e.defect:<24} {e.source:<9} {e.size} {e.colour} {e.shape}: {e.location}{note}")
    print(f"{len(rows)} entries ({len(kb.categories())} categories in all; files: "
          f"{', '.join(cfg.tools.knowledge.extra) or 'shipped only'})")
    return 0


def _serve_page(app, host: str, port: int, what: str, token) -> int:
    from cluster.web_pages import ServerThread

    with ServerThread(app, host, port) as server:
        print(f"{what} at {server.url}/" + (f"?token={token}" if token else "") + "  (Ctrl-C to stop)", flush=True)
        try:
            server.thread.join()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_view(cfg: AppConfig, args) -> int:
    from cluster.viewer_data import ViewerError
    from cluster.web_pages import check_bind, viewer_app

    try:
        check_bind(args.host, args.token)
        app = viewer_app(args.runs, args.token)
    except (ValueError, ViewerError) as e:
        print(f"anomalyagent: view: {getattr(e, 'message', e)}", file=sys.stderr)
        return 2
    return _serve_page(app, args.host, args.port, f"episode viewer over {args.runs}", args.token)


def cmd_rate(cfg: AppConfig, args) -> int:
    from cluster.rating_store import RatingStore, generated_samples, real_samples
    from cluster.web_pages import check_bind, rating_app

    mix = [m for m in (args.mix or "").split(",") if m]
    unknown = [m for m in mix if m not in ("real", "baseline")]
    problems = [f"--mix takes real and/or baseline, got {', '.join(unknown)}"] if unknown else []
    samples_dir = Path(args.samples)
    if not samples_dir.is_dir():
        problems.append(f"samples folder not found: {samples_dir} (the output of `anomalyagent synthesize`)")
    if "baseline" in mix and not (args.baseline and Path(args.baseline).is_dir()):
        problems.append("--mix baseline needs --baseline DIR (e.g. bench agent's rows/fixed)")
    try:
        check_bind(args.host, args.token)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        print(f"anomalyagent: rate: {problems[0]}", file=sys.stderr)
        return 2
    store = RatingStore(args.out)
    pool = generated_samples(samples_dir, "agent")
    if not pool:
        print(f"anomalyagent: rate: no samples under {samples_dir} (<category>/<defect>/image/NNN.png)", file=sys.stderr)
        return 2
    if "baseline" in mix:
        pool += generated_samples(Path(args.baseline), "baseline")
    if "real" in mix:
        from cluster.assets import dataset_root
        from rollout.data import open_dataset

        wanted = {}
        for s in pool:
            if s["source"] == "agent":
                wanted[(s["category"], s["defect"])] = wanted.get((s["category"], s["defect"]), 0) + 1
        ds = open_dataset(cfg.data.format, args.data or dataset_root(cfg))
        pool += real_samples(ds, wanted)
    new = store.add_samples(pool)
    print(f"rating pool: {len(pool)} samples ({new} new) in {args.out}")
    return _serve_page(rating_app(store, args.token), args.host, args.port, "blind rating", args.token)


def cmd_demo(cfg: AppConfig, args) -> int:
    from cluster.demo import run_demo

    return run_demo(cfg, Path(args.out) if args.out else None)


def cmd_bench(cfg: AppConfig, args) -> int:
    if args.suite == "tools":
        from cluster.bench_tools import run_tools_bench

        run_tools_bench(cfg)
    elif args.suite == "rollout":
        from cluster.bench_rollout import run_rollout_bench

        run_rollout_bench(cfg, n_tasks=args.tasks, group_size=args.group)
    elif args.suite == "faults":
        from cluster.bench_faults import run_faults_bench

        res = run_faults_bench(cfg, fuzz_turns=args.fuzz_turns, serve_seconds=args.serve_seconds,
                               kill_seconds=args.kill_seconds)
        print(f"episodes_lost={res['episodes_lost']} duplicates={res['duplicates']} "
              f"parser_crashes={res['parser_crashes']} serve_5xx={res['serve_5xx']}")
        print(f"node_lost_episodes={res['node_lost_episodes']} serve_5xx_under_kill={res['serve_5xx_under_kill']} "
              f"corrupt_files_undetected={res['corrupt_files_undetected']} "
              f"unauthorized_accepted={res['unauthorized_accepted']}")
    elif args.suite == "agent":
        from cluster.agent_bench import last_line, run_agent_bench

        out = Path(args.out) if args.out else Path(cfg.out_dir) / "bench_agent"
        cfg = _preflight(cfg, args.data, out)
        report = run_agent_bench(cfg, out, Path(args.runs) if args.runs else None, args.quick, args.data)
        print((out / "table.md").read_text())
        print(f"table: {out / 'table.md'}, figure: {out / 'ablation.png'}")
        print(last_line(report))
    elif args.suite == "judge":
        from actors.registry import build_tool
        from benchmarks.judge import calibrate, write_report
        from cluster.assets import dataset_root
        from rollout.data import open_dataset

        from cluster.knowledge_check import prepare_knowledge

        root = Path(args.data) if args.data else dataset_root(cfg)
        ds = open_dataset(cfg.data.format, root, args.categories.split(",") if args.categories else None,
                          cfg.data.visa_type_table)
        out = Path(args.out) if args.out else Path(cfg.out_dir) / "bench_judge"
        out.mkdir(parents=True, exist_ok=True)
        cfg = prepare_knowledge(cfg, ds, ds.categories, list(cfg.data.target_categories), out)[0]
        res = calibrate(ds, root, build_tool("quality_eval", cfg.tools))
        write_report(res, out)
        print((out / "confusion.md").read_text())
        print(f"judge_type_accuracy={res['judge_type_accuracy']:.3f} real_pass={res['real_pass']:.3f} "
              f"wrong_type_fail={res['wrong_type_fail']:.3f} normal_fail={res['normal_fail']:.3f}")
    elif args.suite == "mvtec":
        from benchmarks.mvtec import run_mvtec_bench
        from cluster.assets import dataset_root

        if not args.generated:
            print("anomalyagent: bench mvtec needs --generated DIR (the output of `anomalyagent synthesize`)",
                  file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else Path(cfg.out_dir) / "bench_mvtec"
        res = run_mvtec_bench(args.generated, args.data or str(dataset_root(cfg)), out,
                              args.categories.split(",") if args.categories else None, args.epochs, args.quick,
                              cfg.bench, cfg.data.format)
        m = res["summary"]["mean"]
        print(f"tables in {out}: table.md, results.csv, per_category.png, samples.png")
        print(f"mean IS={m['is']:.3f} IC-LPIPS={m['ic_lpips']:.3f} (small clusters as 0; dropped: {m['ic_lpips_dropped']:.3f}) "
              f"cls_acc={m['cls_accuracy']:.1f} image_AUROC={m['image_auroc']:.1f} pixel_AP={m['pixel_ap']:.1f} "
              f"AU-PRO={m['au_pro']:.1f}")
        print(f"iclpips_speedup={res['iclpips']['speedup']:.2f}")
    return 0


def cmd_sft(cfg: AppConfig, args) -> int:
    from cluster.sft_cmd import run_sft

    out = Path(args.out) if args.out else Path(cfg.out_dir) / "sft"
    res = run_sft(_preflight(cfg, None, out), out)
    print(f"SFT checkpoint: {res['checkpoint']} (loss {res['first_loss']:.3f} -> {res['last_loss']:.3f})")
    decoding = "greedy" if res["eval_temperature"] == 0 else f"temperature {res['eval_temperature']:g}"
    if res["after_sampled"] is not None:
        print(f"well-formed after SFT at temperature {res['sampled_temperature']:g}: {res['after_sampled']:.3f}")
    print(f"well-formed rates below: {decoding} decoding")
    print(f"well_formed_before={res['before']:.3f} well_formed_after={res['after']:.3f}")
    return 0


def cmd_train(cfg: AppConfig, args) -> int:
    from cluster.train_cmd import run_train

    out = Path(args.out) if args.out else Path(cfg.out_dir)
    res = run_train(_preflight(cfg, None, out), out)
    print(f"GRPO run in {res['out']}: {len(res['history'])} steps, reward curve {res['out']}/reward_curve.png")
    print(f"reward_first5={res['reward_first5']:.4f} reward_last5={res['reward_last5']:.4f}")
    return 0


def cmd_synthesize(cfg: AppConfig, args) -> int:
    from cluster.synthesize_cmd import run_synthesize

    res = run_synthesize(cfg, args.data, Path(args.out), args.categories.split(",") if args.categories else None)
    print(f"synthesize: {res['delivered']} of {res['samples']} samples delivered in {res['out']} by source "
          f"{res['all_sources']}; undelivered {sum(res['undelivered'].values())}")
    if res.get("lost"):
        print(f"anomalyagent: {res['lost']} episodes failed on infrastructure faults; rerun to fill them", file=sys.stderr)
        return 1
    return 0


def cmd_serve(cfg: AppConfig, args) -> int:
    import threading

    from actors.knowledge_files import load_knowledge
    from cluster.assets import latest_policy

    load_knowledge(tuple(cfg.tools.knowledge.extra))  # a bad knowledge file stops here, before Ray
    from cluster.ray_session import cluster_session
    from cluster.serve_app import drain_and_stop, start_serve

    from cluster.serve_auth import ServeAuthError, keys_for_start

    if args.port is not None:
        cfg.serve.port = args.port
    if args.host is not None:
        cfg.serve.host = args.host
    try:
        keys_for_start(cfg.serve)  # before Ray starts and before anything binds
    except ServeAuthError as e:
        print(f"anomalyagent: serve: {e}", file=sys.stderr)
        return 2
    policy, what = latest_policy(cfg, cfg.serve.policy)
    with cluster_session(cfg):
        url = start_serve(cfg, policy)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # ours, not Ray's: a SIGTERM used to end in SIGABRT
            signal.signal(sig, lambda signum, frame: stop.set())
        print(f"serving {policy} ({what}) at {url}: POST {url}/v1/synthesize, GET {url}/healthz, "
              f"schema {url}/openapi.json  (Ctrl-C or SIGTERM to stop)", flush=True)
        stop.wait()
        print(f"serve: stopping; requests in flight get up to {cfg.serve.drain_timeout_s:g}s", flush=True)
        cut = drain_and_stop("anomalyagent", cfg.serve.drain_timeout_s)
        print(f"serve: stopped ({cut} requests cut off)", flush=True)
    return 0


COMMANDS: Dict[str, Callable[[AppConfig, argparse.Namespace], int]] = {
    "make-data": cmd_make_data,
    "tiny-models": cmd_tiny_models,
    "split": cmd_split,
    "demo": cmd_demo,
    "synthesize": cmd_synthesize,
    "serve": cmd_serve,
    "bench": cmd_bench,
    "sft": cmd_sft,
    "train": cmd_train,
    "knowledge": cmd_knowledge,
    "view": cmd_view,
    "rate": cmd_rate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomalyagent", description="Agentic industrial anomaly synthesis on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("make-data", help="write the synthetic dataset in the MVTec AD layout")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=None)
    _add_common(p)
    p = sub.add_parser("tiny-models", help="build and save the tiny Qwen2 and Qwen2.5-VL models")
    p.add_argument("--out", required=True)
    _add_common(p)
    p = sub.add_parser("split", help="write the per-defect-type floor(N/3) split lists of a dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="dataset root (default: the configured one)")
    p.add_argument("--categories", default=None, help="comma-separated")
    _add_common(p)
    p = sub.add_parser("bench", help="benchmarks: tools (IG batching), rollout (manager vs sequential), "
                                     "mvtec (the MVTec-AD tables), faults (reliability figures), "
                                     "judge (QE calibration on real anomalies), agent (the ablation)")
    p.add_argument("suite", choices=["tools", "rollout", "mvtec", "faults", "judge", "agent"])
    p.add_argument("--fuzz-turns", type=int, default=10000, help="faults: generated policy turns")
    p.add_argument("--serve-seconds", type=float, default=20.0, help="faults: sustained serve load")
    p.add_argument("--kill-seconds", type=float, default=60.0, help="faults: serve load while replicas are killed")
    p.add_argument("--generated", default=None, help="mvtec: folder written by `anomalyagent synthesize`")
    p.add_argument("--data", default=None, help="mvtec, judge, agent: dataset root (default: the configured one)")
    p.add_argument("--out", default=None, help="mvtec, judge, agent: output folder (default: <out_dir>/bench_<suite>)")
    p.add_argument("--categories", default=None, help="mvtec, judge: comma-separated (default: all)")
    p.add_argument("--runs", default=None, help="agent: folder with (or for) the SFT and GRPO checkpoints")
    p.add_argument("--epochs", type=int, default=None, help="mvtec: classifier and detector epochs")
    p.add_argument("--quick", action="store_true", help="mvtec, agent: the CPU preset (small images, few epochs, few samples)")
    p.add_argument("--tasks", type=int, default=16, help="rollout: number of tasks")
    p.add_argument("--group", type=int, default=4, help="rollout: samples per task (G)")
    _add_common(p)
    p = sub.add_parser("sft", help="stage 1: build trajectories, supervised fine-tuning, well-formed rate before/after")
    p.add_argument("--out", default=None, help="run folder (default: out_dir from the config)")
    _add_common(p)
    p = sub.add_parser("train", help="stage 2: GRPO from the SFT checkpoint (SFT first if none)")
    p.add_argument("--out", default=None, help="run folder (default: out_dir from the config)")
    _add_common(p)
    p = sub.add_parser("synthesize", help="the agent over a dataset's normals -> OUT/<category>/<defect>/{image,mask}/NNN.png")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="dataset root (default: the configured one)")
    p.add_argument("--categories", default=None, help="comma-separated (default: data.target_categories)")
    _add_common(p)
    p = sub.add_parser("serve", help="the Ray Serve endpoint: POST /v1/synthesize, GET /healthz")
    p.add_argument("--port", type=int, default=None, help="default: serve.port (8000)")
    p.add_argument("--host", default=None, help="default: serve.host (127.0.0.1)")
    _add_common(p)
    p = sub.add_parser("knowledge", help="the knowledge base: list what is known, or add an entry to a file of yours")
    p.add_argument("action", choices=["list", "add"])
    p.add_argument("--out", default=None, help="add: the YAML or JSON file to add the entry to (created if missing)")
    p.add_argument("--category", default=None, help="add: the category folder name; list: show only this one")
    p.add_argument("--defect", default=None, help="add: the defect type folder name")
    for name, what in (("shape", "a shape word, e.g. scratch, crack, hole, spot, dent (a wrong one lists them all)"),
                       ("colour", "a colour word, e.g. dark, white, brown, red (a wrong one lists them all)"),
                       ("size", "small, medium or large"), ("location", "where it occurs, e.g. 'on the rim'"),
                       ("appearance", "what it looks like, one sentence"), ("kind", "object (default) or texture"),
                       ("contrast", "low, medium (default) or high")):
        p.add_argument(f"--{name}", default=None, help=f"add: {what}")
    _add_common(p)
    p = sub.add_parser("view", help="the episode viewer: a web page over the trajectories and samples of a runs folder")
    p.add_argument("--runs", required=True, help="a runs folder (synthesize, train, bench agent or the demo)")
    p.add_argument("--host", default="127.0.0.1", help="default: %(default)s; any other host needs --token")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=None, help="required off loopback: pages and API take ?token=")
    _add_common(p)
    p = sub.add_parser("rate", help="blind rating of samples by people: good-sample rate with Wilson intervals and kappa")
    p.add_argument("--samples", required=True, help="the agent's output (`anomalyagent synthesize`'s folder)")
    p.add_argument("--mix", default=None, help="also show: real (the dataset's anomalies), baseline (--baseline's output)")
    p.add_argument("--baseline", default=None, help="a baseline's output folder, e.g. bench agent's rows/fixed")
    p.add_argument("--data", default=None, help="dataset root for --mix real (default: the configured one)")
    p.add_argument("--out", required=True, help="the SQLite file of the ratings (kept; a restart resumes)")
    p.add_argument("--host", default="127.0.0.1", help="default: %(default)s; any other host needs --token")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--token", default=None, help="required off loopback")
    _add_common(p)
    p = sub.add_parser("demo", help="the main job on the embedded default, end to end")
    p.add_argument("--out", default=None, help="report folder (default: runs/demo)")
    _add_common(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    stray = [r for r in rest if r.startswith("-") or "=" not in r]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides) + rest  # key=value after options
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"anomalyagent: config error: {e}", file=sys.stderr)
        return 2
    from actors.knowledge_files import KnowledgeFileError
    from cluster.assets import PolicyKindError
    from cluster.knowledge_check import KnowledgeError
    from cluster.resources import ResourceError
    from rollout.data.types import DatasetError

    if args.command == "knowledge" and args.action == "add" and not args.out:
        parser.error("knowledge add needs --out FILE")
    try:
        if cfg.policy.path and args.command in ("sft", "train", "synthesize", "serve", "bench", "demo"):
            from cluster.assets import check_policy_kind

            check_policy_kind(cfg.policy.kind, os.path.expanduser(cfg.policy.path))  # before any work
        return COMMANDS[args.command](cfg, args)
    except KeyboardInterrupt:
        print(f"anomalyagent: {args.command} stopped; what it finished is on disk, whole: run the same command "
              "again to resume", file=sys.stderr)
        return 130
    except PolicyKindError as e:
        print(f"anomalyagent: policy error: {e}", file=sys.stderr)
        return 2
    except (KnowledgeError, KnowledgeFileError) as e:
        for line in str(e).splitlines():
            print(f"anomalyagent: knowledge error: {line}", file=sys.stderr)
        return 2
    except DatasetError as e:
        print(f"anomalyagent: dataset error: {e}", file=sys.stderr)
        return 2
    except ResourceError as e:
        print(f"anomalyagent: resource error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
