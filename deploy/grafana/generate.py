"""The platform's Grafana dashboards, built with grafana-foundation-sdk; writes dashboards/*.json.

Run it after changing a panel (the JSON files are committed; tests/deploy/test_grafana_dashboards.py
fails when they differ from what this script builds):

    .venv/bin/python deploy/grafana/generate.py           # rewrite dashboards/*.json
    .venv/bin/python deploy/grafana/generate.py --check   # exit 1 if they are out of date

Every panel queries only metrics the platform exports (libs/blockrag/telemetry/metrics.py); a live
test (tests/e2e/test_dashboard_queries.py) runs each expression against a Prometheus that scraped the
platform. Each dashboard has two variables: the Prometheus data source and the tenant (all by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh, VariableSort

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TENANT = 'tenant=~"$tenant"'
RATE = "$__rate_interval"
# What the variables mean when an expression is run outside Grafana (the live test does).
VARIABLES = {"$__rate_interval": "5m", "$tenant": ".*"}
QUANTILES = (0.5, 0.95, 0.99)

def query(expr: str, legend: str = "__auto") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def timeseries(title: str, description: str, unit: str, *targets: Dataquery, width: int = 12) -> Timeseries:
    panel = (Timeseries().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .height(8).span(width).legend(VizLegendOptions().show_legend(True)
                                           .display_mode(LegendDisplayMode.LIST)
                                           .placement(LegendPlacement.BOTTOM)))
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


def quantiles(metric: str, selector: str = "", by: str = "") -> list[Dataquery]:
    """p50/p95/p99 of a histogram; ``by`` adds labels to the legend (``tenant``)."""
    labels = f"{by}, le" if by else "le"
    legend = f"p{{q}} {{{{{by}}}}}" if by else "p{q}"
    series = f"{metric}_bucket{{{selector}}}" if selector else f"{metric}_bucket"
    return [query(f"histogram_quantile({q}, sum by ({labels}) (rate({series}[{RATE}])))",
                  legend.format(q=round(q * 100))) for q in QUANTILES]


def latest(metric: str, by: str = "tenant") -> str:
    """``metric`` from the node (pod) that reported each scope's run last: every node that ever
    trained a scope keeps its last values, so a max over nodes could show an older run's."""
    stamp = f"blockrag_distill_updated_timestamp_seconds{{{TENANT}}}"
    newest = f"{stamp} == on (tenant) group_left max by (tenant) ({stamp})"
    return f"max by ({by}) ({metric}{{{TENANT}}} and on (instance, tenant) ({newest}))"


def dashboard(uid: str, title: str, description: str, rows: list[tuple[str, list[Timeseries]]]) -> Dashboard:
    board = (Dashboard(title).uid(uid).description(description).tags(["blockrag"]).time("now-1h", "now")
             .refresh("30s").timezone("browser").editable()
             .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
             .with_variable(QueryVariable("tenant").label("Tenant").datasource(DATASOURCE)
                            .query("label_values(blockrag_e2e_request_latency_seconds_count, tenant)")
                            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
                            .multi(True).include_all(True).all_value(".*")
                            .current(VariableOption(selected=True, text="All", value="$__all"))))
    ids = iter(range(1, 1000))  # Grafana wants panel ids unique within a dashboard
    for row_title, panels in rows:
        board = board.with_row(Row(row_title).id(next(ids)))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    return board


def serving() -> Dashboard:
    latency = [
        timeseries("Time to first token", "From a Generate request's arrival to its first streamed token.", "s",
                   *quantiles("blockrag_time_to_first_token_seconds", TENANT)),
        timeseries("Inter-token latency", "Between two consecutive streamed tokens of one answer.", "s",
                   *quantiles("blockrag_inter_token_latency_seconds", TENANT)),
        timeseries("End-to-end latency", "From a Generate request's arrival to its last token.", "s",
                   *quantiles("blockrag_e2e_request_latency_seconds", TENANT)),
        timeseries("Time to first token p95 by tenant", "", "s",
                   *quantiles("blockrag_time_to_first_token_seconds", TENANT, by="tenant")[1:2]),
    ]
    traffic = [
        timeseries("Requests by service and method", "gRPC requests handled, every status code.", "reqps",
                   query(f"sum by (service, method) (rate(blockrag_requests_total[{RATE}]))",
                         "{{service}} {{method}}")),
        timeseries("Errors by code", "gRPC requests that ended with a status other than OK.", "reqps",
                   query(f"sum by (service, method, code) (rate(blockrag_request_errors_total[{RATE}]))",
                         "{{service}} {{method}} {{code}}")),
        timeseries("Error ratio by service", "The BlockRAGHighErrorRatio alert fires above 5% for 5 minutes.",
                   "percentunit",
                   query(f"sum by (service) (rate(blockrag_request_errors_total[{RATE}]))"
                         f" / sum by (service) (rate(blockrag_requests_total[{RATE}]))", "{{service}}")),
        timeseries("Answers by tenant", "Generate requests finished (errors included), by tenant.", "reqps",
                   query(f"sum by (tenant) (rate(blockrag_e2e_request_latency_seconds_count{{{TENANT}}}[{RATE}]))",
                         "{{tenant}}")),
        timeseries("Prompt tokens", "Prompt tokens of Generate requests (blocks + question), and those whose KV "
                   "came from a cache tier.", "short",
                   query(f"sum(rate(blockrag_prompt_tokens_total{{{TENANT}}}[{RATE}]))", "prompt"),
                   query(f"sum(rate(blockrag_prompt_tokens_cached_total{{{TENANT}}}[{RATE}]))", "cached")),
    ]
    # the replicas' AnswerScheduler (libs/blockrag/scheduler.py); no tenant label: a slot is shared
    answers = [
        timeseries("Answers running and waiting", "Answers being generated (in a batch slot, or alone when too "
                   "long for one) and answers admitted and waiting for a slot, summed over the Generation "
                   "replicas. Running at slots x replicas with a queue that stays: add replicas.", "short",
                   query("sum(blockrag_answers_running)", "running"),
                   query("sum(blockrag_answers_waiting)", "waiting")),
        timeseries("Answers refused busy", "Generate requests refused with RESOURCE_EXHAUSTED because every slot "
                   "ran and the queue was full (clients get a retry hint).", "reqps",
                   query(f"sum(rate(blockrag_answers_refused_total[{RATE}]))", "refused")),
    ]
    return dashboard("blockrag-serving", "BlockRAG / Serving",
                     "Generation latency (TTFT, inter-token, end to end), request rates and errors, answers "
                     "running, waiting and refused.",
                     [("Latency", latency), ("Traffic and errors", traffic), ("Answers", answers)])


def cache() -> Dashboard:
    hits = [
        timeseries("Blocks by tier", "Share of the blocks used by Generate that came from each tier: the "
                   "replica's memory, the KV store, or computed on the request path.", "percentunit",
                   query(f"sum by (tier) (rate(blockrag_blocks_total{{{TENANT}}}[{RATE}])) / ignoring (tier) "
                         f"group_left sum(rate(blockrag_blocks_total{{{TENANT}}}[{RATE}]))", "{{tier}}")),
        timeseries("Block token hit rate by tenant", "Block tokens served from memory or the store, out of "
                   "all block tokens.", "percentunit",
                   query(f'sum by (tenant) (rate(blockrag_block_tokens_total{{{TENANT}, tier!="computed"}}[{RATE}]))'
                         f" / sum by (tenant) (rate(blockrag_block_tokens_total{{{TENANT}}}[{RATE}]))",
                         "{{tenant}}")),
        timeseries("Prompt tokens from cache by tenant", "Prompt tokens (question included) whose KV came "
                   "from a cache tier.", "percentunit",
                   query(f"sum by (tenant) (rate(blockrag_prompt_tokens_cached_total{{{TENANT}}}[{RATE}]))"
                         f" / sum by (tenant) (rate(blockrag_prompt_tokens_total{{{TENANT}}}[{RATE}]))",
                         "{{tenant}}")),
        timeseries("Blocks by tier and tenant", "", "short",
                   query(f"sum by (tenant, tier) (rate(blockrag_blocks_total{{{TENANT}}}[{RATE}]))",
                         "{{tenant}} {{tier}}")),
    ]
    size = [
        timeseries("Replica memory tier size", "KV held in the live replicas' memory tiers.", "bytes",
                   query("sum by (service) (blockrag_replica_cache_bytes)", "{{service}}")),
        timeseries("Replica memory tier blocks", "", "short",
                   query("sum by (service) (blockrag_replica_cache_entries)", "{{service}}")),
        timeseries("Evictions", "Blocks the replicas' memory tiers dropped to make room.", "short",
                   query(f"sum by (service) (rate(blockrag_replica_cache_evictions_total[{RATE}]))",
                         "{{service}}")),
        timeseries("Memory tier hit rate by tier", "Lookups each memory tier answered, out of those that reached "
                   "it: a lookup walks the tiers fastest first (device, then pinned host memory, on a GPU "
                   "replica; host memory on a CPU one), so a block found in the second tier is a miss of the "
                   "first.", "percentunit",
                   query(f'sum by (service, tier) (rate(blockrag_replica_cache_tier_lookups_total{{result="hit"}}'
                         f"[{RATE}])) / sum by (service, tier) (rate(blockrag_replica_cache_tier_lookups_total"
                         f"[{RATE}]))", "{{service}} {{tier}}")),
    ]
    maintenance = [
        timeseries("Maintenance passes", "Eviction to the configured watermarks, then the orphan sweep, every "
                   "cache_maintenance.interval_s in the Admin replica, by outcome (a failed pass is retried at "
                   "the next interval).", "short",
                   query("sum by (outcome) (increase(blockrag_cache_maintenance_runs_total[1h]))", "{{outcome}}")),
        timeseries("Removed from the store", "KV bytes the passes removed: entries evicted, orphan objects "
                   "swept.", "bytes",
                   query("sum by (kind) (increase(blockrag_cache_maintenance_removed_bytes_total[1h]))", "{{kind}}")),
    ]
    return dashboard("blockrag-cache", "BlockRAG / Cache",
                     "Where the blocks' KV came from (memory, store, computed) by tenant, the replicas' "
                     "memory tier size and evictions, the store's maintenance.",
                     [("Hits", hits), ("Memory tier", size), ("Store maintenance", maintenance)])


def precompute() -> Dashboard:
    panels = [
        timeseries("Tokens per second", "Block tokens encoded, averaged over the window; and the throughput of "
                   "the latest batch.", "short",
                   query(f"sum(rate(blockrag_precompute_tokens_total[{RATE}]))", "average"),
                   query("max(blockrag_precompute_tokens_per_second)", "latest batch")),
        timeseries("Batch size", "Block tokens per precompute batch.", "short",
                   *quantiles("blockrag_precompute_batch_tokens")),
        timeseries("Batch time", "Wall time of one batch (forward pass over its blocks).", "s",
                   *quantiles("blockrag_precompute_batch_seconds")),
        timeseries("Batches and requests", "Batches per second, and Precompute requests by status code.",
                   "reqps",
                   query(f"sum(rate(blockrag_precompute_batch_seconds_count[{RATE}]))", "batches"),
                   query(f'sum by (code) (rate(blockrag_requests_total{{service="precompute"}}[{RATE}]))',
                         "requests {{code}}")),
        timeseries("Queue", "Precompute requests waiting for their replica's device (one batch on it at a time) "
                   "and encoding on it, summed over the replicas. Waiting that stays above 0: add replicas or "
                   "raise precompute_batch_tokens.", "short",
                   query("sum by (state) (blockrag_precompute_requests)", "{{state}}")),
    ]
    return dashboard("blockrag-precompute", "BlockRAG / Precompute",
                     "The precompute service encoding blocks' KV: throughput, batch sizes and times, queue.",
                     [("Precompute", panels)])


def segmentation() -> Dashboard:
    panels = [
        timeseries("Block size", "Tokens of the blocks segmentation makes (of the served model).", "short",
                   *quantiles("blockrag_segment_block_tokens"),
                   query(f"sum(rate(blockrag_segment_block_tokens_sum[{RATE}]))"
                         f" / sum(rate(blockrag_segment_block_tokens_count[{RATE}]))", "mean")),
        timeseries("Latency per document", "Time to segment one document.", "s",
                   *quantiles("blockrag_segmentation_latency_seconds")),
        timeseries("Throughput", "Tokens segmented per second.", "short",
                   query(f"sum(rate(blockrag_segmented_tokens_total[{RATE}]))", "tokens")),
        timeseries("Documents and blocks", "Documents segmented and blocks made, per second.", "short",
                   query(f"sum(rate(blockrag_segmentation_latency_seconds_count[{RATE}]))", "documents"),
                   query(f"sum(rate(blockrag_segment_block_tokens_count[{RATE}]))", "blocks")),
    ]
    return dashboard("blockrag-segmentation", "BlockRAG / Segmentation",
                     "The segmentation service cutting documents into blocks: sizes, latency, throughput.",
                     [("Segmentation", panels)])


def distillation() -> Dashboard:
    admin = 'service="admin"'
    runs = [
        timeseries("Runs by status", "Distillation runs that entered each status (running: training started; "
                   "succeeded, failed, cancelled), in the last hour, wherever they started (request or "
                   "schedule).", "short",
                   query("sum by (status) (increase(blockrag_distill_runs_total[1h]))", "{{status}}")),
        timeseries("Distillation runs started", "StartDistillation requests by status code (OK: a run "
                   "started; FAILED_PRECONDITION: one was already running for the tenant).", "short",
                   query(f'sum by (code) (increase(blockrag_requests_total{{{admin}, method="StartDistillation"}}'
                         f"[{RATE}]))", "{{code}}")),
        timeseries("Progress", "Steps done out of the steps asked, of each scope's latest run (shared: the "
                   "shared scope).", "percentunit",
                   query(latest("blockrag_distill_progress"), "{{tenant}}")),
        timeseries("Distillation admin requests", "Start, watch, cancel, get and list requests by method.",
                   "reqps",
                   query(f"sum by (method) (rate(blockrag_requests_total{{{admin}, "
                         f'method=~".*Distillation.*"}}[{RATE}]))', "{{method}}")),
    ]
    training = [
        timeseries("Training loss", "Loss of the latest step of each scope's run, per supervised token.", "short",
                   query(latest("blockrag_distill_loss"), "{{tenant}}")),
        timeseries("KL to the teacher", "KL(teacher under full attention || student under block attention) per "
                   "supervised token, latest step of each scope's run.", "short",
                   query(latest("blockrag_distill_kl"), "{{tenant}}")),
        timeseries("Training throughput", "Sequence tokens through the student per second, and steps per "
                   "minute.", "short",
                   query(f"sum by (tenant) (rate(blockrag_distill_tokens_total{{{TENANT}}}[{RATE}]))",
                         "tokens/s {{tenant}}"),
                   query(f"60 * sum by (tenant) (rate(blockrag_distill_steps_total{{{TENANT}}}[{RATE}]))",
                         "steps/min {{tenant}}")),
    ]
    versions = [
        timeseries("Held-out KL", "Mean answer-token KL(full || block attention) on held-out QA questions in each "
                   "scope's latest evaluation: the version the run trained (candidate), the one serving the "
                   "scope (active) and the base model. Lower is better.", "short",
                   query(latest("blockrag_distill_eval_kl", "tenant, model"), "{{tenant}} {{model}}")),
        timeseries("Held-out accuracy", "Accuracy on the same questions (auto_promote needs a lower KL and an "
                   "accuracy not lower than the active version's).", "percentunit",
                   query(latest("blockrag_distill_eval_accuracy", "tenant, model"), "{{tenant}} {{model}}")),
        timeseries("Model versions", "Versions registered, and changes of the active version (promote, rollback: "
                   "by request or by auto_promote), in the last hour.", "short",
                   query(f"sum by (tenant) (increase(blockrag_model_versions_registered_total{{{TENANT}}}[1h]))",
                         "registered {{tenant}}"),
                   query(f"sum by (tenant, action) (increase(blockrag_model_version_changes_total{{{TENANT}}}[1h]))",
                         "{{action}} {{tenant}}")),
        timeseries("Active version age", "Time since each scope's active version became active; no line while "
                   "the base model serves the scope. Which version: blockrag-admin model list.", "s",
                   query(f"time() - max by (tenant) (blockrag_model_version_active_since_timestamp_seconds"
                         f"{{{TENANT}}} > 0)", "{{tenant}}")),
        timeseries("Promotion requests", "PromoteModelVersion and RollbackModelVersion requests by status code: "
                   "the served model version changed on OK.", "short",
                   query(f"sum by (method, code) (increase(blockrag_requests_total{{{admin}, "
                         f'method=~"PromoteModelVersion|RollbackModelVersion"}}[{RATE}]))', "{{method}} {{code}}")),
    ]
    return dashboard("blockrag-distillation", "BlockRAG / Distillation",
                     "Distillation runs (status, progress), training loss, KL and throughput, the evaluation "
                     "of each run and the model versions it registered and promoted.",
                     [("Runs", runs), ("Training", training), ("Evaluation and versions", versions)])


BUILDERS = {"serving": serving, "cache": cache, "precompute": precompute, "segmentation": segmentation,
            "distillation": distillation}


def dashboards() -> dict[str, str]:
    """File name (``blockrag-<name>.json``) -> the dashboard's JSON text, as committed."""
    return {f"blockrag-{name}.json": json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
            for name, build in BUILDERS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the generator")
    args = parser.parse_args(argv)
    built = dashboards()
    stale = sorted({p.name for p in OUT.glob("*.json")} - set(built))
    differ = [n for n, text in built.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
    if args.check:
        for name in differ + stale:
            print(f"{OUT / name} is out of date: run {Path(__file__).name}", file=sys.stderr)
        return 1 if differ or stale else 0
    OUT.mkdir(exist_ok=True)
    for name in stale:
        (OUT / name).unlink()
    for name in differ:
        (OUT / name).write_text(built[name])
    print(f"{len(built)} dashboards in {OUT} ({len(differ)} written, {len(stale)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
