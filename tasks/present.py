"""Prefect task that shows a finished sweep: Pareto plots, DIR/report.md, and artifacts in the Prefect UI."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from slmops import plots, report
from slmops.adapters.tracking import Tracker
from slmops.metrics import fmt
from slmops.promotion import decision_markdown


def mlflow_run_url(tracker: Tracker, run_id: str) -> str:
    """Where the run is in the MLflow UI (for a local store: the address `mlflow ui` serves by default)."""
    run = tracker.run(run_id)
    base = tracker.tracking_uri if tracker.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


@task(name="present-sweep", cache_policy=NONE)
def present_sweep(doc: dict, out_dir: str, tracking_uri: str) -> dict[str, str]:
    """Write the plots and report.md, log the plots to the parent run, publish the Prefect UI artifacts."""
    out = Path(out_dir)
    tracker = Tracker(tracking_uri)
    parent = doc["mlflow"]["parent_run_id"]
    rows = [{"name": v["name"], "metrics": {**v["metrics"], "size_bytes": v["size_bytes"]}}
            for v in doc["variants"] if v["status"] != "failed" and v["size_bytes"]]
    champion = ((doc.get("decision") or {}).get("champion") or {}).get("name")
    quality = plots.quality_metric(rows)
    made: dict[str, str] = {}
    if quality:
        for x_metric, file, title in (("size_bytes", "pareto_size.png", f"{quality} against size"),
                                      ("decode_tokens_per_s", "pareto_speed.png", f"{quality} against decode speed")):
            path = plots.pareto_plot(rows, x_metric, quality, champion, out / "plots" / file, title)
            if path:
                made[title] = f"plots/{file}"
                tracker.client.log_artifact(parent, str(path), "plots")
    (out / "report.md").write_text(report.report_markdown(doc, made))

    table = [{"variant": v["name"], "status": v["status"], "size": report.human_size(v["size_bytes"]),
              "foundry id": v.get("foundry_model_id") or "-",
              **{m: fmt(m, v["metrics"].get(m)) for m in ("exact_match", "kl_div_mean", "decode_tokens_per_s")},
              "error": (v["error"] or "")[:200]} for v in doc["variants"]]
    create_table_artifact(table=table, key="sweep-variants", description=f"Variants of sweep {doc['sweep_id']}")
    decision = doc.get("decision")
    if decision:
        from slmops.promotion import Decision

        fields = {k: decision[k] for k in Decision.__dataclass_fields__}
        create_markdown_artifact(markdown=decision_markdown(Decision(**fields), decision["registered_model"]),
                                 key="promotion-decision", description="Promotion decision")
    create_link_artifact(link=mlflow_run_url(tracker, parent), link_text=f"MLflow: sweep {doc['sweep_id']}",
                         key="mlflow-sweep-run", description="The sweep's parent run in MLflow")
    return made
