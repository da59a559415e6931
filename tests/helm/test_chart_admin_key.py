"""The chart's first admin API key: a Secret holding a key of libs/blockrag/auth's shape (generated,
or the operator's), and a hook Job after the migration that runs `blockrag keys bootstrap
--key-file` on it, its command parsed by the real CLI; the distillation CronJob calls with it."""

from __future__ import annotations

import base64

import typer.main
from chart_render import VALUE_SETS, manifests, one, render

from blockrag.auth import ApiKey
from blockrag.cli.app import app

FILE = "/var/run/blockrag/admin-key/api-key"


def _bootstrap_params(job: dict) -> dict:
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["blockrag", "keys", "bootstrap"], command
    group = typer.main.get_command(app)
    ctx = group.make_context("blockrag", command[1:], resilient_parsing=False)
    keys = group.get_command(ctx, "keys")
    sub = keys.make_context("keys", command[2:], parent=ctx)
    return keys.get_command(sub, "bootstrap").make_context("bootstrap", command[3:], parent=sub).params


def _mounted(job: dict) -> tuple[str, str]:
    """(Secret name, key) behind the file the Job reads."""
    spec = job["spec"]["template"]["spec"]
    [mount] = spec["containers"][0]["volumeMounts"]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    [item] = volume["secret"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == FILE
    return volume["secret"]["secretName"], item["key"]


def test_a_generated_key_that_the_cli_accepts_and_a_hook_that_stores_it():
    secret = one({}, "Secret", "blockrag-admin-key")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = ApiKey.parse(base64.b64decode(secret["data"]["api-key"]).decode())  # the shape the platform checks
    assert key.key_id.startswith("key_")

    job = one({}, "Job", "blockrag-admin-key")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "post-install,post-upgrade"
    migrate = one({}, "Job", "blockrag-migrate")["metadata"]["annotations"]
    assert "post-install" in migrate["helm.sh/hook"]
    assert int(hooks["helm.sh/hook-weight"]) > int(migrate["helm.sh/hook-weight"])  # the schema first
    params = _bootstrap_params(job)
    assert (str(params["key_file"]), params["tenant"], params["database_url"], params["force"]) == \
        (FILE, "default", "$(BLOCKRAG_DATABASE_URL)", False)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BLOCKRAG_DATABASE_URL"]["value"].startswith("postgresql+psycopg://blockrag@blockrag-postgresql")
    assert "PGPASSWORD" in env
    assert _mounted(job) == ("blockrag-admin-key", "api-key")


def test_the_operators_secret_instead():
    values = VALUE_SETS["ingress-auth"]  # auth.adminKey: existingSecret ops-admin-key, key "key", tenant ops
    assert not [m for m in manifests(values) if m["kind"] == "Secret" and m["metadata"]["name"].endswith("admin-key")]
    job = one(values, "Job", "blockrag-admin-key")
    assert _mounted(job) == ("ops-admin-key", "key")
    assert _bootstrap_params(job)["tenant"] == "ops"
    notes = render(values)["blockrag/templates/NOTES.txt"]
    assert "get secret ops-admin-key -o jsonpath='{.data.key}'" in notes


def test_the_distillation_cronjob_calls_with_the_admin_key():
    container = one(VALUE_SETS["distill"], "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0]
    [env] = container["env"]
    assert env == {"name": "BLOCKRAG_API_KEY",
                   "valueFrom": {"secretKeyRef": {"name": "blockrag-admin-key", "key": "api-key"}}}


def test_no_bootstrap_no_key():
    values = {**VALUE_SETS["distill"], "auth": {"adminKey": {"bootstrap": False}}}
    rendered = manifests(values)
    assert not [m for m in rendered if m["metadata"]["name"] == "blockrag-admin-key"]
    container = one(values, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "env" not in container
