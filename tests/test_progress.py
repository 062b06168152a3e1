"""Progress reporting: a line every so often in a log, a redrawn bar in a terminal."""
import io

from unisync_loss.progress import Progress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_few_lines_not_one_per_update() -> None:
    log = io.StringIO()
    items = list(progress(range(1000), desc="steps", every_seconds=3600, stream=log))
    assert items == list(range(1000))
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # the first update and the final count
    assert "\r" not in log.getvalue()
    assert lines[-1].startswith("steps: 1000/1000 [") and "100%" in lines[-1]


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    terminal = _Terminal()
    with Progress(total=4, desc="clips", stream=terminal) as bar:
        bar.set_postfix("loss 0.5")
        bar.update(4)
    text = terminal.getvalue()
    assert text.startswith("\rclips: 4/4") and text.endswith("\n") and text.count("\n") == 1
    assert "loss 0.5" in text


def test_a_single_item_is_reported_once_in_a_log() -> None:
    log = io.StringIO()
    list(progress(["clip"], desc="scoring", stream=log))
    assert log.getvalue().count("scoring: 1/1") == 1


def test_unknown_total_and_disabled() -> None:
    log = io.StringIO()
    list(progress(iter(range(3)), desc="x", stream=log))
    assert log.getvalue().splitlines()[-1].startswith("x: 3 ")
    quiet = io.StringIO()
    list(progress(range(3), stream=quiet, disable=True))
    assert quiet.getvalue() == ""
