"""Scale-out: the variants of one sweep as flow runs of the `variant/on-worker` deployment, spread over the workers
of the `variants` queue; each worker's --limit caps the conversions its machine runs at once.

    python -m ops.stack up --variant-workers 2          # two workers on the variants queue
    run_variants(job, variants)      # from quantization_sweep: inline, or on the workers (execution.variants_on)

Every variant's flow run reads and writes the folders named in its VariantJob (work_dir, out_dir, the fp32 export),
so the workers must see one filesystem at the same paths (one machine, or a shared volume).
"""

from __future__ import annotations

import time

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.variant import VariantJob, result_of, variant_pipeline
from slmops.errors import SlmopsError, VariantError
from slmops.keys import variant_key
from slmops.promote.champion import ChampionMeasured, ChampionToMeasure
from slmops.variant import Variant, VariantResult
from tasks.evaluate import measure_champion

VARIANT_DEPLOYMENT = "variant/on-worker"
# the variant flow's return value is the sweep's entry for it: it must be persisted for this process to read it
_JOB_VARIABLES = {"env": {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}}


def run_variants(job: VariantJob, variants: list[Variant], champion: ChampionToMeasure | None = None
                 ) -> tuple[list[VariantResult], ChampionMeasured | None]:
    """Every variant's flow run: one after another in this process, or all at once on the workers; and the current
    champion measured again between them (after them, on workers), with the same settings.

    When the champion is measured again, no candidate's measurements are reused: every timed number the decision
    compares is then of this run's machine state."""
    if champion is not None and champion.folder is not None:
        job = job.model_copy(update={"spec": job.spec.model_copy(update={
            "evaluation": job.spec.evaluation.model_copy(update={"reuse": False})})})
    if job.spec.execution.variants_on == "workers":
        results = run_variants_on_workers(job, variants, job.spec.execution.deployment)
        return results, _measure_champion(job, champion)
    results, measured, middle = [], None, len(variants) // 2
    for index, variant in enumerate(variants, 1):
        if index == middle + 1:
            measured = _measure_champion(job, champion)
        state = variant_pipeline(job, variant, index, return_state=True)
        result = result_of(state)
        if result is None:  # a bug, not the variant's own failure: raised as it was
            state.result()
            raise SlmopsError(f"variant {variant.name}: its flow run ended {state.name}: {state.message}")
        results.append(result)
        if results[-1].mlflow_error and not job.tracking_lost:
            # the store is gone: the next variants log to a null tracker instead of retrying it once each
            job = job.model_copy(update={"tracking_lost": results[-1].mlflow_error})
    return results, measured


def _measure_champion(job: VariantJob, champion: ChampionToMeasure | None) -> ChampionMeasured | None:
    """The champion's numbers of today, or why there are none (its folder is gone, it would not run)."""
    if champion is None:
        return None
    if champion.folder is None:
        return ChampionMeasured(fresh=None, note=champion.note)
    logger = get_run_logger()
    logger.info("measuring the champion %s (version %s) again, beside the candidates", champion.name,
                champion.model_version)
    state = measure_champion(champion, job.spec.evaluation, job.dataset, job.spec.foundry, job.foundry_cache,
                             job.ws.evaluations / f"champion-v{champion.model_version}", job.ws.roofline,
                             return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, VariantError):
        logger.warning("%s", outcome)
        return ChampionMeasured(fresh=None, note=f"{outcome}; stored numbers used")
    if isinstance(outcome, BaseException):
        raise outcome
    return ChampionMeasured(fresh=outcome, note="re-measured in this sweep, beside the candidates")


def run_variants_on_workers(job: VariantJob, variants: list[Variant], deployment_name: str = VARIANT_DEPLOYMENT,
                            poll_s: float = 2.0) -> list[VariantResult]:
    """Submit every variant to the workers at once, wait for all, return their results in the order given."""
    logger = get_run_logger()
    context = FlowRunContext.get()
    parent = str(context.flow_run.id) if context and context.flow_run else job.sweep_id
    _warn_if_no_worker(deployment_name, logger)
    runs = []
    for index, variant in enumerate(variants, 1):
        try:
            run = run_deployment(
                deployment_name, timeout=0, flow_run_name=variant.name, job_variables=_JOB_VARIABLES,
                parameters={"job": job.model_dump(mode="json"), "variant": variant.model_dump(mode="json"),
                            "index": index},
                tags=["slmops", f"sweep:{job.sweep_id}"],
                # a retried submission (same parent run) finds the run it made instead of making a second one
                idempotency_key=f"{parent}:{variant.name}:{variant_key(job.source_sha, variant, job.tool_versions)}",
            )
        except ObjectNotFound:
            raise SlmopsError(f"deployment {deployment_name!r} is not on the Prefect server; deploy it "
                              "(python -m ops.stack deploy)") from None
        logger.info("[%d/%d] %s: submitted to the workers as flow run %s", index, len(variants), variant.name,
                    run.id)
        runs.append(run)
    finished = _wait(runs, poll_s)
    results, broken = [], []
    for run in runs:
        state = finished[run.id].state
        result = result_of(state)
        if result is not None:
            results.append(result)
        else:
            broken.append(f"{run.name} ({run.id}): {state.name}: {state.message or 'no message'}")
    if broken:
        # a variant's own failure is a result with status "failed"; a run that ended otherwise is infrastructure
        # (a worker or machine died) or a bug: fail the sweep, whose re-run reuses the variants that finished
        raise SlmopsError(f"{len(broken)} variant flow run(s) did not complete on the workers: {'; '.join(broken)}; "
                          "run the sweep again: finished variants are reused")
    return results


def _wait(runs: list, poll_s: float) -> dict:
    """Poll the runs until every one is in a final state; return them by id."""
    ids = [run.id for run in runs]
    with get_client(sync_client=True) as client:
        while True:
            current = {r.id: r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids)))}
            if len(current) == len(ids) and all(r.state and r.state.is_final() for r in current.values()):
                return current
            time.sleep(poll_s)


def _warn_if_no_worker(deployment_name: str, logger) -> None:
    """Say so when no worker polls the deployment's queue: its runs would wait (Late in the UI) until one starts."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name)
        except ObjectNotFound:
            return  # reported by run_deployment, with what to do
        if not deployment.work_pool_name or not deployment.work_queue_name:
            return
        queue = client.read_work_queue_by_name(deployment.work_queue_name, work_pool_name=deployment.work_pool_name)
        if str(queue.status).upper().endswith("NOT_READY"):
            logger.warning("no worker polls queue %r of pool %r: the variants wait until one starts "
                           "(python -m ops.stack up --variant-workers N)", deployment.work_queue_name,
                           deployment.work_pool_name)
