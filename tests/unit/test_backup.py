"""Backups: the scheduled pg_dump of every database the stack owns on a kept volume, CloudNativePG's
own backups, and the config that refuses what cannot work."""

import os
import subprocess
from pathlib import Path

import pytest

from components.backup import BACKUP_DIR, BACKUP_SCRIPT
from components.config import ConfigError, parse_stack_config
from tests.support.crds import validate_custom_resource
from tests.support.k8s import env_of, integral
from tests.support.program import run_program

VALID = {"domain": "example.com", "exposure": {"tls": {"enabled": True}}}
STORE = {"destinationPath": "s3://backups/mlflow", "secretName": "s3"}


def test_a_cronjob_dumps_every_database_on_schedule_never_twice_at_once(dev):
    spec = dev.get("CronJob", "postgres-backup").outputs["spec"]
    assert spec["schedule"] == "43 2 * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "postgres:17.11" and container["args"] == ["scheduled"]
    env = env_of(container)
    assert env["BACKUP_DATABASES"]["value"] == "mlflow" and env["BACKUP_KEEP"]["value"] == "7"
    assert "pg_dump --format=custom" in container["command"][2]
    assert pod["volumes"] == [{"name": "backups", "persistentVolumeClaim": {"claimName": "postgres-backups"}}]


def test_the_backup_volume_is_kept_and_taken_over_like_every_volume_of_user_data(dev):
    claim = dev.get("PersistentVolumeClaim", "postgres-backups")
    assert claim.outputs["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim.provider.split("::")[-2] == "kept-objects-provider"


def test_without_a_schedule_only_the_volume_stays_for_the_backups_taken_before_an_upgrade():
    run = run_program("dev", postgres={"backup": {"schedule": None}})
    assert not [c for c in run.kinds("CronJob") if c.k8s_name == "postgres-backup"]
    run.get("PersistentVolumeClaim", "postgres-backups")


def test_an_external_server_backs_up_its_mlflow_database_and_the_auth_store():
    run = run_program("dev", postgres={"mode": "external", "external": {"host": "db", "secretName": "pg",
                                                                        "database": "tracking"}},
                      mlflow={"auth": {"kind": "basic"}}, exposure={"tls": {"enabled": True}})
    (container,) = run.get("CronJob", "postgres-backup").outputs["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"]
    assert env_of(container)["BACKUP_DATABASES"]["value"] == "tracking mlflow_auth"


def test_cnpg_keeps_its_own_backups_in_the_object_store_on_the_same_schedule():
    run = run_program("dev", postgres={"mode": "cnpg", "backup": {"keep": 3, "objectStore": {
        **STORE, "endpointURL": "http://minio.minio:9000", "retentionPolicy": "14d"}}})
    (cluster,) = [r for r in run.resources if r.kind == "Cluster"]
    (scheduled,) = [r for r in run.resources if r.kind == "ScheduledBackup"]
    for resource in (cluster, scheduled):
        validate_custom_resource(integral(resource.manifest))
    store = cluster.outputs["spec"]["backup"]
    assert store["retentionPolicy"] == "14d"
    assert store["barmanObjectStore"]["destinationPath"] == "s3://backups/mlflow"
    assert store["barmanObjectStore"]["s3Credentials"] == {
        "accessKeyId": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"},
        "secretAccessKey": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    spec = scheduled.outputs["spec"]
    assert spec["schedule"] == "0 43 2 * * *"  # CloudNativePG's cron counts seconds first
    assert spec["cluster"] == {"name": cluster.k8s_name} and spec["method"] == "barmanObjectStore"
    assert scheduled.urn.split("::")[-1] == "postgres-scheduled-backup" and cluster.urn in scheduled.dependencies


def problems_of(backup: dict, mode: str = "bundled") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({**VALID, "postgres": {"mode": mode, "backup": backup}})
    return caught.value.problems


@pytest.mark.parametrize(("backup", "mode", "problem"), [
    ({"schedule": "daily"}, "bundled", "postgres.backup.schedule: 'daily' is not a cron schedule"),
    ({"keep": 0}, "bundled", "postgres.backup.keep: must be a whole number >= 1"),
    ({"size": "lots"}, "bundled", "postgres.backup.size: must be a Kubernetes quantity"),
    ({"restoreFrom": "yesterday"}, "bundled", "postgres.backup.restoreFrom: 'yesterday' is not a backup's name"),
    ({"objectStore": STORE}, "bundled",
     "postgres.backup.objectStore.destinationPath: CloudNativePG's own backups exist only with postgres.mode cnpg"),
    ({"objectStore": {"destinationPath": "s3://b/p"}}, "cnpg", "postgres.backup.objectStore.secretName: name"),
    ({"objectStore": {"secretName": "s3"}}, "cnpg", "postgres.backup.objectStore.destinationPath: required"),
    ({"objectStore": {**STORE, "retentionPolicy": "30 days"}}, "cnpg",
     "postgres.backup.objectStore.retentionPolicy: '30 days' is not a CloudNativePG retention policy"),
])
def test_bad_backup_settings_name_the_key_and_the_fix(backup, mode, problem):
    problems = problems_of(backup, mode)
    assert any(line.startswith(problem) for line in problems), problems


def test_a_pending_restore_is_said_at_every_up_until_the_key_is_removed():
    config = parse_stack_config({**VALID, "postgres": {"backup": {"restoreFrom": "before-upgrade-20261203T101500Z"}}})
    assert config.postgres.backup.restore_from == "before-upgrade-20261203T101500Z"
    (warning,) = config.warnings
    assert warning.startswith("postgres.backup.restoreFrom: before-upgrade-20261203T101500Z is restored")
    assert "remove the key" in warning



PG_DUMP_STAND_IN = '#!/bin/sh\nfor a; do case $a in --file=*) echo dump > "${a#--file=}";; esac; done\n'
EARLIER = ["before-restore-20261201T000000Z", "before-restore-20261202T000000Z", "scheduled-20261201T000000Z"]


def run_backup_script(tmp_path: Path, series: str, keep: int, protected: str = "") -> tuple[list[str], Path]:
    """BACKUP_SCRIPT under sh on a directory standing in for the backup volume (holding EARLIER and a
    failed run's leftovers), with stand-ins for psql (every database exists) and pg_dump (writes its
    --file); the backups left, and the new one."""
    volume, tools = tmp_path / "volume", tmp_path / "bin"
    for name in [*EARLIER, "before-restore-20261203T000000Z.partial"]:
        (volume / name).mkdir(parents=True)
    tools.mkdir()
    (tools / "psql").write_text("#!/bin/sh\necho 1\n")
    (tools / "pg_dump").write_text(PG_DUMP_STAND_IN)
    for tool in tools.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "BACKUP_DATABASES": "mlflow mlflow_auth",
           "BACKUP_KEEP": str(keep), "BACKUP_PROTECTED": protected}
    script = BACKUP_SCRIPT.replace(BACKUP_DIR, str(volume))
    subprocess.run(["sh", "-c", script, "sh", series], env=env, check=True, capture_output=True, timeout=30)
    left = sorted(p.name for p in volume.iterdir())
    (taken,) = [name for name in left if name not in EARLIER]
    return left, volume / taken


@pytest.mark.parametrize(("protected", "kept"), [("", []), (EARLIER[0], [EARLIER[0]])])
def test_a_backup_keeps_the_newest_of_its_series_and_the_one_a_pending_restore_names(tmp_path, protected, kept):
    left, taken = run_backup_script(tmp_path, "before-restore", keep=1, protected=protected)
    assert left == sorted([*kept, taken.name, EARLIER[2]])  # the failed run's leftovers gone; other series kept
    assert sorted(p.name for p in taken.iterdir()) == ["mlflow.dump", "mlflow_auth.dump"]
