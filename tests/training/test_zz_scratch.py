from tests.training.test_accelerate import _free_port, _launch, _tiny_job, ROOT
import json, pytest
@pytest.mark.parametrize("args", [
    ["--cpu", "--num_processes", "2"],
    ["--config_file", str(ROOT / "training/accelerate/fsdp.yaml")],
    ["--config_file", str(ROOT / "training/accelerate/fsdp.yaml"), "--mixed_precision", "no"],
])
def test_try(tmp_path, tiny_registry_base, registry, args):
    job = _tiny_job(tmp_path)
    done = _launch(args + ["--main_process_port", str(_free_port())], job)
    print("RC", done.returncode)
    m = tmp_path / "run" / "metrics.json"
    print("METRICS", json.loads(m.read_text())["train"].get("world_size") if m.exists() else None)
    print("STDOUT", done.stdout[-1500:])
    print("STDERR", done.stderr[-3000:])
