"""Small readers over the manifests a mock run records."""

from __future__ import annotations

import configparser

# The Kubernetes version whose OpenAPI schema every manifest is validated against.
K8S_VERSION = "1.30"


def env_of(container: dict) -> dict[str, dict]:
    """name -> the env entry (with `value` or `valueFrom`)."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def pod_spec(resource) -> dict:
    return resource.outputs["spec"]["template"]["spec"]


def container(resource, name: str) -> dict:
    spec = pod_spec(resource)
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


def arg_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def integral(value):
    """Mocks deliver numbers as floats; the API server would get integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def auth_config(run) -> configparser.SectionProxy:
    """The `[mlflow]` section of the auth config file MLflow's container reads: its path from the
    container's env, followed through the volume mount to the ConfigMap's data."""
    deployment = run.get("Deployment", "mlflow")
    server = container(deployment, "mlflow")
    directory, file_name = env_of(server)["MLFLOW_AUTH_CONFIG_PATH"]["value"].rsplit("/", 1)
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [c for c in run.kinds("ConfigMap") if c.k8s_name == volume["configMap"]["name"]]
    ini = configparser.ConfigParser()
    ini.read_string(config_map.outputs["data"][file_name])
    return ini["mlflow"]
