"""What a person watching the stack sees, read from the pages' text in a real browser, logged in as they would be:
the Prefect UI's sweep with a child flow run per variant and the sweep's artifacts, a failed variant shown failed,
the MLflow UI comparing the variants' metrics and the registered model's champion alias; and, without credentials,
each UI's login and no data."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from ops.ui import mlflow_compare_row, mlflow_page, prefect_page
from slmops.report import human_size
from ui_sweeps import FAILING, MODEL, VARIANTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STATES = ("Completed", "Failed", "Crashed", "Cancelled", "Running", "Pending", "Scheduled")


def auth_string(stack) -> str:
    return stack.client_env(with_secrets=True)["PREFECT_API_AUTH_STRING"]


def mlflow_login(stack) -> tuple[str, str]:
    client = stack.client_env(with_secrets=True)
    return client["MLFLOW_TRACKING_USERNAME"], client["MLFLOW_TRACKING_PASSWORD"]


def child_runs_shown(page, ui_url: str, run_id) -> dict[str, str]:
    """The flow run page's "Subflow Runs" tab, as the page shows it: each child run's name and state."""
    page.goto(f"{ui_url}/runs/flow-run/{run_id}")
    page.get_by_text("Subflow Runs", exact=True).click()
    items = page.locator(".state-list-item")
    items.first.wait_for()
    # the tab's own count ("3 Flow runs"), then every one of them rendered
    total = int(page.get_by_text(re.compile(r"^\d+ Flow runs?$")).first.inner_text().split()[0])
    expect(items).to_have_count(total)
    shown = {}
    for i in range(items.count()):
        lines = [line.strip() for line in items.nth(i).inner_text().splitlines() if line.strip()]
        state = next(line for line in lines if line in STATES)
        name = lines[lines.index(state) - 1]  # the run's name sits just above its state
        shown[name] = state
    return shown


def artifact_text(page, ui_url: str, run_id, key: str) -> str:
    """The text of one of the flow run's artifacts, opened from its "Artifacts" tab."""
    page.goto(f"{ui_url}/runs/flow-run/{run_id}")
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text(key, exact=True).click()
    page.get_by_text("Show raw data").wait_for()
    return page.inner_text("body")


def test_the_prefect_ui_shows_the_triggered_sweep_a_completed_child_run_per_variant_and_its_artifacts(
        stack, triggered, browser, pages):
    ui = stack.prefect_ui_url
    page = prefect_page(browser, ui, auth_string(stack))
    pages.append(page)

    page.goto(f"{ui}/runs/flow-run/{triggered.run.id}")
    page.get_by_text(triggered.run.name, exact=True).first.wait_for()
    assert child_runs_shown(page, ui, triggered.run.id) == {triggered.sweep_run.name: "Completed"}

    assert child_runs_shown(page, ui, triggered.sweep_run.id) == {v["name"]: "Completed" for v in VARIANTS}

    table = artifact_text(page, ui, triggered.sweep_run.id, "sweep-variants")
    for name, variant in triggered.variants.items():
        row = page.get_by_role("row").filter(has=page.get_by_text(name, exact=True))
        cells = [c.strip() for c in row.inner_text().split("\t") if c.strip()]
        assert cells[:3] == [name, "succeeded", human_size(variant["size_bytes"])], (name, cells)
    assert f"Variants of sweep {triggered.report['sweep_id']}" in table

    decision = triggered.report["decision"]["champion"]
    text = artifact_text(page, ui, triggered.sweep_run.id, "promotion-decision")
    assert f"Champion: {decision['name']} (model version {decision['model_version']}," in text
    assert f"Promoted: {MODEL}" in text


def test_the_prefect_ui_shows_a_failed_variant_failed_and_the_others_completed(stack, with_a_failure, browser,
                                                                               pages):
    ui = stack.prefect_ui_url
    page = prefect_page(browser, ui, auth_string(stack))
    pages.append(page)
    assert with_a_failure.variants[FAILING["name"]]["status"] == "failed"

    shown = child_runs_shown(page, ui, with_a_failure.sweep_run.id)
    assert shown == {**{v["name"]: "Completed" for v in VARIANTS}, FAILING["name"]: "Failed"}

    table = artifact_text(page, ui, with_a_failure.sweep_run.id, "sweep-variants")
    row = page.get_by_role("row").filter(has=page.get_by_text(FAILING["name"], exact=True))
    assert "failed" in row.inner_text().split("\t")[1], row.inner_text()
    assert with_a_failure.variants[FAILING["name"]]["error"][:60] in table


def test_the_mlflow_ui_compares_the_variants_metrics_and_shows_the_champion_alias(stack, triggered, browser, pages):
    from mlflow.tracking import MlflowClient

    base = stack.mlflow_url
    page = mlflow_page(browser, *mlflow_login(stack))
    pages.append(page)
    experiment = MlflowClient(base).get_run(triggered.report["mlflow"]["parent_run_id"]).info.experiment_id

    # the experiment's runs: the sweep's run, opened to show its variants' runs, which are ticked and compared
    page.goto(f"{base}/#/experiments/{experiment}/runs")
    sweep_row = page.get_by_role("row").filter(has_text=triggered.report["sweep_id"])
    sweep_row.locator("button").first.click()
    for name in triggered.variants:
        row = page.get_by_role("row").filter(has=page.get_by_text(name, exact=True))
        row.locator("input[type=checkbox]").first.check()
    page.get_by_role("button", name="Compare").click()
    page.get_by_text(f"Comparing {len(triggered.variants)} Runs").wait_for()

    columns = mlflow_compare_row(page, "Run Name:")
    assert sorted(columns) == sorted(triggered.variants)
    for metric in ("size_bytes", "kl_div_mean", "decode_tokens_per_s"):
        shown = mlflow_compare_row(page, metric)
        assert shown is not None and len(shown) == len(columns), (metric, shown)
        logged = [triggered.variants[name]["metrics"].get(metric, triggered.variants[name].get(metric))
                  for name in columns]
        assert [float(cell) for cell in shown] == pytest.approx(logged, rel=1e-3, abs=1e-9), (metric, shown, logged)

    champion = triggered.report["decision"]["champion"]
    page.goto(f"{base}/#/models/{MODEL}")
    page.get_by_text(f"Version {champion['model_version']}", exact=True).wait_for()
    holders = [row.inner_text().splitlines()[0] for row in page.get_by_role("row").all()
               if re.search(r"@\s*champion\b", row.inner_text())]
    assert holders == [f"Version {champion['model_version']}"]


def test_without_credentials_each_ui_shows_its_login_and_no_data(stack, triggered, browser, pages):
    ui = stack.prefect_ui_url
    page = prefect_page(browser, ui, None)
    pages.append(page)
    page.goto(ui)
    page.get_by_role("button", name="Login").wait_for()
    assert "/login" in page.url
    # a link to the sweep's run: the UI says authentication failed and shows nothing of the run
    page.goto(f"{ui}/runs/flow-run/{triggered.run.id}")
    page.get_by_text("Authentication failed.").first.wait_for()
    shown = page.inner_text("body")
    assert triggered.run.name not in shown and triggered.sweep_run.name not in shown

    wrong = prefect_page(browser, ui, None)
    pages.append(wrong)
    wrong.goto(f"{ui}/login")
    wrong.get_by_placeholder("admin:pass").fill("not-the-auth-string")
    wrong.get_by_role("button", name="Login").click()
    wrong.get_by_text("Authentication failed.").first.wait_for()
    assert "/login" in wrong.url

    # the MLflow server's basic-auth app: a 401 with a Basic challenge (a browser's login prompt); a browser with no
    # credentials to give cancels it, and the page never loads
    page = mlflow_page(browser, None, None)
    pages.append(page)
    answers = []
    page.on("response", lambda response: answers.append((response.status, response.headers.get("www-authenticate"))))
    with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
        page.goto(f"{stack.mlflow_url}/#/models/{MODEL}")
    assert answers and answers[0] == (401, 'Basic realm="mlflow"')
    assert {status for status, _ in answers} == {401}, f"something was served without credentials: {answers}"
