from pathlib import Path

from services.demo import DemoSettings, demo_config
from services.trainer.config import parse_config


def test_the_demo_runs_gift_with_the_configs_chosen_weights_and_ft_without_them(tmp_path: Path) -> None:
    configs = {m: demo_config(m, tmp_path, "http://127.0.0.1:1", DemoSettings(tasks=2)) for m in ("ft", "gift")}
    gift, ft = (parse_config(configs[m], base=tmp_path) for m in ("gift", "ft"))
    assert gift.method.overrides == {"awc": 0.0, "ita": 0.0} and gift.method.settings().distill == 1.0
    assert ft.method.preset == "ft" and ft.method.overrides == {}
    assert [task.label for task in ft.tasks] == ["objects", "textures"] and ft.evaluation.split == "test"
    assert ft.training.iterations == gift.training.iterations == DemoSettings().iterations
