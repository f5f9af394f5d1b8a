"""The documentation site: the CLI reference is exactly `--help`, internal links resolve, gallery
pages show their plots in a real headless browser, examples use only the public API, and the
guide's commands parse.

The built site comes from ``$RESNETLAB_DOCS_HTML`` when set (``make test`` builds the whole quick
gallery with ``make docs`` first and points here); otherwise one session fixture builds the site
into a temporary folder executing only the two cheap gallery pages the browser test opens.
"""

from __future__ import annotations

import ast
import html
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CHROMIUM, DRIVER, needs_chromium

ROOT = Path(__file__).resolve().parents[2]
DOCS, EXAMPLES = ROOT / "docs", ROOT / "examples"
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS))

import check_links  # noqa: E402
import cli_reference  # noqa: E402

# the two gallery pages the browser test opens, and the figures each must show
SHOWN = {"plot_01_residual_block_anatomy": 2, "plot_04_gradient_flow": 2}
# install.md's commands are run by tests/docs/test_install_guide.py (a real pip install)
MY_GUIDE = ["build", "train", "compare", "finetune", "export", "docs"]
PUBLIC = ("resnetlab.run", "resnetlab.models", "resnetlab.analysis", "resnetlab.deploy",
          "resnetlab.transfer", "resnetlab.data", "resnetlab.engine.config")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    given = os.environ.get("RESNETLAB_DOCS_HTML")
    if given:
        assert (Path(given) / "index.html").is_file(), f"RESNETLAB_DOCS_HTML={given}: no site there"
        return Path(given)
    work = tmp_path_factory.mktemp("site")
    shutil.copytree(DOCS, work / "docs", ignore=shutil.ignore_patterns("_build", "auto_examples"))
    shutil.copytree(EXAMPLES, work / "examples")
    env = {**os.environ, "RESNETLAB_DOCS_QUICK": "1", "MPLBACKEND": "Agg",
           "RESNETLAB_DOCS_FILTER": "|".join(SHOWN),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = work / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(work / "docs"), str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _help_by_subprocess(path: list[str]) -> subprocess.Popen:
    """`resnetlab PATH --help` as a user's 100-column terminal shows it (a separate process)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TERMINAL_WIDTH")}
    env.update(COLUMNS=cli_reference.WIDTH, NO_COLOR="1", TERM="dumb",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    code = "import sys; sys.argv[0] = 'resnetlab'; from resnetlab.cli.app import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *path, "--help"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _pre_of_section(page: str, section_id: str) -> str:
    """The text of the first <pre> inside the section with ``section_id``."""
    start = page.index(f'<section id="{section_id}">')
    pre = re.search(r"<pre[^>]*>(.*?)</pre>", page[start:], re.S)
    assert pre, section_id
    return html.unescape(re.sub(r"<[^>]+>", "", pre.group(1)))


@pytest.mark.slow
def test_cli_reference_is_exactly_help_for_every_command(site):
    page = (site / "cli.html").read_text(encoding="utf-8")
    live = list(cli_reference.commands())
    assert len(live) >= 10 and ["train"] in [p for p, _ in live] and ["analyze", "lesion"] in [p for p, _ in live]
    # every section of the page is a live command, and every live command has a section
    ids = set(re.findall(r'<section id="(cli-[a-z0-9-]+)">', page))
    assert ids == {cli_reference.anchor(p) for p, _ in live}
    procs = [(path, cmd, _help_by_subprocess(path)) for path, cmd in live]
    for path, cmd, proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        shown = _pre_of_section(page, cli_reference.anchor(path))
        assert cli_reference.normalise(shown) == cli_reference.normalise(out), path
        for param in cmd.params:
            for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if opt.startswith("-"):
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", shown), (path, opt)


@pytest.mark.slow
def test_every_internal_link_and_image_resolves(site, tmp_path):
    assert check_links.check(site) == []
    # the checker itself notices a broken link, a missing file and a missing anchor
    (tmp_path / "index.html").write_text('<a href="nope.html">x</a><img src="i.png">'
                                         '<a href="#here">y</a><a href="https://example.org/x">z</a>')
    problems = check_links.check(tmp_path)
    assert len(problems) == 3 and any("no id 'here'" in p for p in problems)


def _screenshot(page: Path, shot: Path, profile: Path) -> tuple[list[int], int, str]:
    """Open ``page`` in headless chromium, scroll through it, save a full-width screenshot;
    returns the naturalWidth of each gallery figure, their count, and the page text."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (pip extra 'analysis')")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2400", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(page.resolve().as_uri())
        figures = driver.find_elements(By.CSS_SELECTOR, "img.sphx-glr-single-img, img.sphx-glr-multi-img")
        driver.execute_script("arguments[0].scrollIntoView();", figures[0]) if figures else None
        widths = driver.execute_script(
            "return Array.from(document.querySelectorAll('img.sphx-glr-single-img, img.sphx-glr-multi-img'))"
            ".map(i => i.complete ? i.naturalWidth : -1)")
        driver.save_screenshot(str(shot))
        text = driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    return widths, len(figures), text


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("example", sorted(SHOWN))
def test_gallery_page_shows_its_plots_in_headless_chromium(site, example, tmp_path):
    from PIL import Image, ImageStat

    page = site / "auto_examples" / f"{example}.html"
    widths, count, text = _screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    assert count >= SHOWN[example], f"{example}: {count} figures rendered"
    assert all(w > 0 for w in widths), widths
    assert "What we measured" in text
    shot = Image.open(tmp_path / "shot.png").convert("L")
    assert shot.width >= 1000 and ImageStat.Stat(shot).stddev[0] > 10  # not a blank page
    # the scrolled-to figure is on screen: the screenshot holds plot colours, not only text
    colours = Image.open(tmp_path / "shot.png").convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 200


def test_examples_tell_the_story_with_the_public_api_only():
    scripts = sorted(EXAMPLES.glob("plot_*.py"))
    assert len(scripts) == 9
    for script in scripts:
        source = script.read_text(encoding="utf-8")
        sized = "RESNETLAB_DOCS_QUICK" in source or "quick and full sizes are the same" in source
        assert sized and "What we measured" in source, script.name
        for node in ast.walk(ast.parse(source)):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("resnetlab"):
                    assert name.startswith(PUBLIC), f"{script.name} imports {name}"
        # the closing paragraph is an f-string printed by the run, never typed numbers
        tail = source.split("What we measured", 1)[1]
        assert "print(" in tail and 'f"' in tail, script.name


def _guide_commands(page: str) -> list[str]:
    text = (DOCS / "guide" / f"{page}.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


@pytest.mark.parametrize("page", MY_GUIDE)
def test_guide_commands_parse(page):
    """Every `resnetlab ...` line of these guide pages is accepted by the command's own parser
    (unknown flags, wrong values and missing arguments fail); `make` targets exist; the pip
    line names an extra that pyproject.toml declares."""
    root = cli_reference.root_command()
    makefile = (ROOT / "Makefile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for line in _guide_commands(page):
        words = shlex.split(line, comments=True)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words.pop(0)  # VAR=value prefixes
        if not words:
            continue
        if words[0] == "resnetlab":
            cmd, rest, parent = root, words[1:], None
            while hasattr(cmd, "list_commands"):  # a group (resnetlab, analyze): its command
                ctx = cmd.context_class(cmd, info_name=rest and rest[0], parent=parent)
                assert rest, line
                name, cmd, rest = cmd.resolve_command(ctx, rest)
                parent = ctx
            cmd.make_context(name, rest, parent=parent)   # raises on any parsing error
        elif words[0] == "make":
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), line
        elif words[:4] == ["python", "-m", "pip", "install"]:
            extra = re.fullmatch(r"\.\[(\w+)\]", words[4]).group(1)
            assert re.search(rf"^{extra} = ", pyproject, re.M), line
        else:
            assert words[0] in ("python",), f"{page}.md: no check for {line!r}"
