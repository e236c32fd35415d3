"""Small readers over the manifests a mock run records."""


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
