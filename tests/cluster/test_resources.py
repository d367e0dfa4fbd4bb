"""Resource presets: what a config asks of the cluster, checked before anything starts."""
import pytest

from cluster.cli import main
from cluster.config import REPO_CONFIGS, load_config
from cluster.resources import Demand, ResourceError, check_fits, resource_plan


def test_cpu_preset_fits_the_local_cluster():
    plan = resource_plan(load_config(REPO_CONFIGS / "cpu.yaml"), learner=True)
    assert sum(d.gpus for d in plan) == 0
    check_fits(plan, {"CPU": 16})


def test_gpu_preset_asks_for_what_its_comments_say():
    plan = {d.name: d for d in resource_plan(load_config(REPO_CONFIGS / "gpu.yaml"), learner=True)}
    assert sum(d.gpus for d in plan.values()) == pytest.approx(7.25)
    assert plan["learner"].replicas == 4 and plan["policy.engine"].gpus == 2
    check_fits(list(plan.values()), {"CPU": 64, "GPU": 8})


def test_too_many_gpus_names_every_actor_asking():
    plan = resource_plan(load_config(REPO_CONFIGS / "gpu.yaml"), learner=True)
    with pytest.raises(ResourceError, match=r"asks for 7.25 GPUs but the cluster has 4") as e:
        check_fits(plan, {"CPU": 64, "GPU": 4})
    assert "learner 4 (4x1)" in str(e.value) and "tools.image_gen 0.5 (2x0.25)" in str(e.value)


def test_fractional_gpu_above_one_is_refused():
    with pytest.raises(ResourceError, match="num_gpus=1.5"):
        check_fits([Demand("tools.image_gen", 1, 1, 1.5)], {"CPU": 8, "GPU": 8})


@pytest.mark.ray
def test_train_with_the_gpu_preset_on_a_cpu_cluster_fails_before_starting(capsys, tmp_path):
    rc = main(["train", "--config", str(REPO_CONFIGS / "gpu.yaml"), "--out", str(tmp_path), "ray.num_cpus=8"])
    err = capsys.readouterr().err
    assert rc == 2 and "resource error: the preset asks for 7.25 GPUs but the cluster has 0" in err
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
