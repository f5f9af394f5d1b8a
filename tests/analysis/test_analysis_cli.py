"""`resnetlab analyze` / `resnetlab report`: user mistakes are one line and exit status 2."""

import pytest

from resnetlab.cli.app import main


@pytest.mark.parametrize("argv,needle", [
    (["analyze", "lesion", "{tmp}/missing"], "missing"),
    (["analyze", "gradcam", "{tmp}", "--per-class", "2"], "no checkpoint here"),
    (["report", "{tmp}"], "not a run directory"),
])
def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_gradcam_needs_images_or_a_grid(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "gradcam", str(tmp_path)])
    assert exc.value.code == 2
    assert "--per-class" in capsys.readouterr().err
