from pathlib import Path

from services.demo import DemoSettings, demo_config, kept_line, transfer_loss_kept
from services.trainer.config import parse_config


def test_the_demo_runs_gift_with_the_configs_chosen_weights_and_ft_without_them(tmp_path: Path) -> None:
    configs = {m: demo_config(m, tmp_path, "http://127.0.0.1:1", DemoSettings(tasks=2)) for m in ("ft", "gift")}
    gift, ft = (parse_config(configs[m], base=tmp_path) for m in ("gift", "ft"))
    assert gift.method.overrides == {"awc": 0.1} and gift.method.settings().distill == 1.0
    assert ft.method.preset == "ft" and ft.method.overrides == {}
    assert [task.label for task in ft.tasks] == ["objects", "textures"] and ft.evaluation.split == "test"
    assert ft.training.iterations == gift.training.iterations == 100  # the config's schedule


def test_the_summary_says_what_share_of_ft_s_transfer_loss_gift_kept() -> None:
    summary = {"zero-shot": {"transfer": 45.0}, "ft": {"transfer": 35.0}, "gift": {"transfer": 42.5}}
    assert transfer_loss_kept(summary) == 0.75
    summary["gift"]["transfer_loss_kept"] = 0.75
    assert (
        kept_line(summary)
        == "GIFT kept 75% of the Transfer that FT lost (Transfer: zero-shot 45.0, ft 35.0, gift 42.5)."
    )
    summary["ft"]["transfer"] = 46.0  # FT lost nothing: no share to give
    assert transfer_loss_kept(summary) is None
