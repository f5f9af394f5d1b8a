"""Issue 23: the per-class Grad-CAM grid is shown at the page's width, not squeezed into a
160 px thumbnail next to the single-image overlays."""

from __future__ import annotations

import json
import re

from PIL import Image

from resnetlab.analysis.report import write_report


def test_gradcam_grid_is_full_width_and_overlays_are_thumbnails(tmp_path):
    run = tmp_path / "run"
    (run / "analysis" / "gradcam").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"top1": 0.9}))
    Image.new("RGB", (1200, 900), "red").save(run / "analysis" / "gradcam_grid.png")
    for i in range(3):
        Image.new("RGB", (300, 170), "blue").save(run / "analysis" / "gradcam" / f"img{i}.png")
    (run / "analysis" / "gradcam.json").write_text(json.dumps(
        {"figure": "gradcam_grid.png", "findings": ["gradcam on layer3"]}))
    html = write_report(run).read_text()
    section = html[html.index("<h2>Grad-CAM</h2>"):]
    section = section[:section.index("</section>")]
    full = re.search(r'<div class="figures">(.*?)</div>', section, re.S).group(1)
    thumbs = re.search(r'<div class="thumbs">(.*?)</div>', section, re.S).group(1)
    assert full.count("<img") == 1 and 'alt="Grad-CAM"' in full  # the per-class grid
    assert thumbs.count("<img") == 3
    assert "width: 160px" not in html
    css = re.search(r"figure img \{([^}]*)\}", html).group(1)
    assert "max-width: 100%" in css
