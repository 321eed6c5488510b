"""Deploy the daily flow to Argo Workflows and Step Functions against a local AWS emulator.

There is no cloud and no Kubernetes cluster here. A moto server on 127.0.0.1
stands in for S3 (and for Batch, Step Functions and EventBridge). Argo can
only be tested as far as ``argo-workflows create --only-json``: the
WorkflowTemplate it prints, and the code package it uploads. Step Functions
is deployed for real, into the emulator. Every other address goes to a proxy
on a closed local port, so a call to anything but 127.0.0.1 fails instead of
leaving the machine. docs/deploy.md says what this does not cover.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from metaflow import Parameter

from service.training.flow import LineupTrainFlow
from tests.conftest import REGION

FLOW_FILE = Path(__file__).resolve().parent.parent / "service" / "training" / "flow.py"
STEPS = ("start", "split", "train", "join", "evaluate", "end")
#: Every Parameter of the flow, which the deployed template must let a run set.
PARAMETERS = {value.name for value in vars(LineupTrainFlow).values()
              if isinstance(value, Parameter)}
#: What ``@schedule(daily=True)`` becomes: 00:00 UTC every day. EventBridge
#: takes the six-field form; Argo keeps the first five fields.
DAILY_EVENTBRIDGE = "cron(0 0 * * ? *)"
DAILY_ARGO = "0 0 * * ?"
#: Nothing listens on the discard port, so a call that escapes 127.0.0.1 fails fast.
DEAD_END = "http://127.0.0.1:9"
KUBERNETES_NAMESPACE = "lineup-jobs"


def _first_token() -> str:
    """Return the production token Metaflow gives the flow's first deployment."""
    from metaflow.plugins.aws.step_functions.production_token import new_token

    return new_token("lineuptrainflow")


def _client(aws, service: str):
    import boto3

    return boto3.client(service, endpoint_url=aws.url, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def bucket(aws, request):
    """A fresh S3 bucket in the emulator, named after the test."""
    name = "lineup-" + request.node.name.replace("_", "-")[:40].rstrip("-").lower()
    _client(aws, "s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def deploy_env(aws, bucket, tmp_path):
    """The environment of a deploying Metaflow, pointed at the emulator and nowhere else."""
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith(("METAFLOW_", "AWS_", "KUBECONFIG"))
                 and key.lower() not in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")}
    return inherited | {
        "METAFLOW_USER": "lineup-deployer",
        # A private home: no developer's ~/.metaflowconfig profile, and the
        # production token Metaflow stores there stays in this test.
        "METAFLOW_HOME": str(tmp_path / "metaflowconfig"),
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/metaflow",
        "METAFLOW_S3_ENDPOINT_URL": aws.url,
        # The configuration production needs: scheduled runs must record their
        # metadata where the service can read it.
        "METAFLOW_DEFAULT_METADATA": "service",
        "METAFLOW_SERVICE_URL": f"{DEAD_END}/metadata",
        "METAFLOW_KUBERNETES_NAMESPACE": KUBERNETES_NAMESPACE,
        "AWS_ENDPOINT_URL": aws.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "HTTP_PROXY": DEAD_END,
        "HTTPS_PROXY": DEAD_END,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def _flow(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the flow file with ``args``; fail the test with its output if it fails."""
    result = subprocess.run([sys.executable, str(FLOW_FILE), "--no-pylint", "--datastore", "s3",
                             *args], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _code_package(aws, bucket: str) -> tuple[str, list[str]]:
    """Return the key of the one code package in the bucket and the files it holds."""
    s3 = _client(aws, "s3")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) == 1 and keys[0].startswith("metaflow/LineupTrainFlow/data/"), keys
    body = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        return keys[0], archive.getnames()


def test_argo_workflow_template_is_daily_and_uploads_its_code(aws, bucket, deploy_env, tmp_path):
    # --generate-new-token makes --only-json use the token a first deployment
    # gets, instead of a placeholder (the real one is read from the cluster).
    daily_data = f"s3://{bucket}/daily/interactions.csv"
    printed = _flow(deploy_env | {"LINEUP_TRAINING_INTERACTIONS": daily_data}, tmp_path,
                    "argo-workflows", "create", "--only-json", "--generate-new-token")
    template = json.loads(printed.stdout)
    assert template["kind"] == "WorkflowTemplate"
    assert template["metadata"]["name"] == "lineuptrainflow"
    assert template["metadata"]["namespace"] == KUBERNETES_NAMESPACE
    annotations = template["metadata"]["annotations"]

    # The CronWorkflow is made from this annotation at deploy time.
    assert json.loads(annotations["metaflow/cron"]) == {"schedule": DAILY_ARGO, "tz": ""}

    token = _first_token()
    assert annotations["metaflow/production_token"] == token

    spec = template["spec"]
    assert {p["name"] for p in spec["arguments"]["parameters"]} == PARAMETERS
    defaults = {p["name"]: p["value"] for p in spec["arguments"]["parameters"]}
    assert json.loads(defaults["grid"]) == "16,32,64,128"
    assert json.loads(defaults["interactions"]) == daily_data  # what the schedule trains on

    templates = {t["name"]: t for t in spec["templates"]}
    dag = {task["name"]: task for task in templates[spec["entrypoint"]]["dag"]["tasks"]}
    assert set(dag) == {"start", "split", "split-foreach-grid-points", "join", "evaluate", "end"}
    assert dag["split-foreach-grid-points"]["withParam"] == (
        "{{tasks.split.outputs.parameters.num-splits}}")
    foreach = templates["split-foreach-grid-points"]["dag"]["tasks"]
    assert [task["template"] for task in foreach] == ["train"]

    bucket_root = f"s3://{bucket}/metaflow"
    package_key, files = _code_package(aws, bucket)
    for name in STEPS:
        container = templates[name]["container"]
        command = " ".join(container["command"])
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert f" step {name} " in command
        # Runs land in production:<token>, in the shared store, recorded by the service.
        assert env["METAFLOW_PRODUCTION_TOKEN"] == token
        assert "--metadata=service" in command and f"--datastore-root={bucket_root}" in command
        assert env["METAFLOW_SERVICE_URL"] == deploy_env["METAFLOW_SERVICE_URL"]
        assert env["METAFLOW_CODE_URL"] == f"s3://{bucket}/{package_key}"
    assert "flow.py" in files


@pytest.fixture
def batch_queue(aws):
    """An AWS Batch job queue in the emulator, which Step Functions steps are submitted to."""
    iam, ec2, batch = (_client(aws, name) for name in ("iam", "ec2", "batch"))
    role = iam.create_role(RoleName="lineup-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="lineup-batch")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="lineup-batch", Description="lineup",
                                      VpcId=vpc)["GroupId"]
    environment = batch.create_compute_environment(
        computeEnvironmentName="lineup-batch", type="MANAGED", serviceRole=role,
        computeResources={"type": "EC2", "minvCpus": 0, "maxvCpus": 4, "desiredvCpus": 0,
                          "instanceTypes": ["m5.large"], "subnets": [subnet],
                          "securityGroupIds": [group],
                          "instanceRole": profile["InstanceProfile"]["Arn"]})
    batch.create_job_queue(jobQueueName="lineup-training", state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{
                               "order": 1,
                               "computeEnvironment": environment["computeEnvironmentArn"]}])
    return "lineup-training"


def test_step_functions_deploys_a_daily_state_machine(
        aws, bucket, batch_queue, deploy_env, tmp_path):
    account_role = "arn:aws:iam::123456789012:role/"
    env = deploy_env | {
        "METAFLOW_BATCH_JOB_QUEUE": batch_queue,
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": account_role + "lineup-batch-s3",
        "METAFLOW_SFN_IAM_ROLE": account_role + "lineup-sfn",
        "METAFLOW_EVENTS_SFN_ACCESS_IAM_ROLE": account_role + "lineup-events",
        "METAFLOW_SFN_DYNAMO_DB_TABLE": "lineup-sfn-foreach",
        # No metadata service listens here; create would ask for its version.
        "METAFLOW_SERVICE_VERSION_CHECK": "0",
    }
    deployed = _flow(env, tmp_path, "step-functions", "create")
    token = _first_token()
    assert f"production:{token}" in deployed.stderr + deployed.stdout

    rules = _client(aws, "events").list_rules()["Rules"]
    assert [(r["Name"], r["ScheduleExpression"], r["State"]) for r in rules] == [
        ("LineupTrainFlow", DAILY_EVENTBRIDGE, "ENABLED")]

    sfn = _client(aws, "stepfunctions")
    machines = sfn.list_state_machines()["stateMachines"]
    assert [m["name"] for m in machines] == ["LineupTrainFlow"]
    definition = json.loads(
        sfn.describe_state_machine(stateMachineArn=machines[0]["stateMachineArn"])["definition"])
    states = definition["States"]
    assert definition["StartAt"] == "start"
    assert {"start", "split", "join", "evaluate", "end"} <= set(states)
    assert any(state["Type"] == "Map" for state in states.values())  # the train foreach
    start = states["start"]["Parameters"]
    assert start["JobQueue"] == batch_queue
    assert start["Parameters"]["metaflow.production_token"] == token
    command = " ".join(start["ContainerOverrides"]["Command"])
    assert "--metadata=service" in command and f"s3://{bucket}/metaflow" in command
    _code_package(aws, bucket)


def test_the_flow_reads_its_data_from_s3(aws, bucket, tmp_path, monkeypatch):
    from service import config
    from service.training.runner import TrainingFailed, train
    from tests import flows

    s3 = _client(aws, "s3")
    data = flows.sample(tmp_path / "data")
    for path in data:
        s3.upload_file(str(path), bucket, f"daily/{path.name}")
    for key, value in {"METAFLOW_S3_ENDPOINT_URL": aws.url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                       "HTTP_PROXY": DEAD_END, "HTTPS_PROXY": DEAD_END,
                       "NO_PROXY": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(key, value)
    settings = config.load({"LINEUP_HOME": str(tmp_path / "home"),
                            "METAFLOW_USER": "lineup-test"})

    pathspec = train(settings, interactions=f"s3://{bucket}/daily/interactions.csv",
                     items=f"s3://{bucket}/daily/items.csv")
    config.apply_metaflow(settings)
    from metaflow import Run

    fingerprint = Run(pathspec).data.data_fingerprint
    assert fingerprint["source"].startswith(f"s3://{bucket}/daily/interactions.csv")
    assert fingerprint["interactions"] == len(data[0].read_text().splitlines()) - 1

    with pytest.raises(TrainingFailed, match=f"s3://{bucket}/daily/missing.csv: file not found"):
        train(settings, interactions=f"s3://{bucket}/daily/missing.csv")
