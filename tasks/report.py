"""Prefect task of the report step: Pareto plots, DIR/report.md, and the artifacts people see in the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from slmops import plots, report as reporting
from slmops.adapters.tracking import Tracker


@task(name="report", cache_policy=NONE)
def report(doc: dict[str, Any], out_dir: Path, tracking_uri: str) -> dict[str, str]:
    """Write the plots and report.md, log the plots to the parent run, publish the Prefect UI artifacts."""
    tracker = Tracker(tracking_uri)
    parent = doc["mlflow"]["parent_run_id"]
    made = plots.sweep_plots(doc, out_dir)
    for path in made.values():
        tracker.log_artifact(parent, out_dir / path, "plots")
    (out_dir / "report.md").write_text(reporting.report_markdown(doc, made))
    create_table_artifact(table=reporting.prefect_table(doc), key="sweep-variants",
                          description=f"Variants of sweep {doc['sweep_id']}")
    if doc.get("decision"):
        create_markdown_artifact(markdown=reporting.decision_markdown(doc["decision"]), key="promotion-decision",
                                 description="Promotion decision")
    create_link_artifact(link=tracker.run_url(parent), link_text=f"MLflow: sweep {doc['sweep_id']}",
                         key="mlflow-sweep-run", description="The sweep's parent run in MLflow")
    return made
