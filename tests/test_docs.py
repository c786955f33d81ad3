"""The documentation site: one claim numbering, a whole API reference, a real page.

The site is built once per session (``-W``: a warning fails it), or taken from
``$KALMANJAX_DOCS_HTML`` when CI has already built it (with the how-to pages
executed). The last test opens it in headless Chromium (Debian's ``chromium``
package), served over HTTP on localhost, and checks that a page, an API entry and a
rendered equation are there; it leaves a screenshot beside the site.
"""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kalmanjax.experiments import EXPERIMENTS

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"

pytestmark = pytest.mark.docs


# ------------------------------------------------ one numbering of the claims


def _readme_claims() -> dict[str, set[int]]:
    table = (ROOT / "README.md").read_text()
    claims: dict[str, set[int]] = {}
    for name, numbers in re.findall(r"^\| `(\w+)` \| ([\d, ]+) \|", table, re.M):
        claims.setdefault(name, set()).update(int(n) for n in numbers.split(","))
    return claims


def _theory_claims() -> dict[int, set[str]]:
    theory = (DOCS / "theory.md").read_text()
    section = theory.split("## The claims", 1)[1].split("\n## ", 1)[0]
    items = re.split(r"\n(\d)\. \*\*", section)[1:]
    listed = {}
    for number, body in zip(items[::2], items[1::2], strict=True):
        experiments = body.split("*Experiments:*", 1)[1]
        listed[int(number)] = set(re.findall(r"`(\w+)`", experiments))
    return listed


def test_the_theory_page_numbers_nine_claims():
    assert sorted(_theory_claims()) == list(range(1, 10))


def test_registry_readme_and_theory_agree_on_the_claims():
    readme, theory = _readme_claims(), _theory_claims()
    for name in EXPERIMENTS:
        claims = set(EXPERIMENTS.claims(name))
        assert claims <= set(range(1, 10)), name
        assert readme.get(name) == claims, f"README's table for {name}"
        assert {k for k, names in theory.items() if name in names} == claims, name
    assert set(readme) == set(EXPERIMENTS)


def test_no_module_cites_the_old_numbering():
    old = re.compile(r"theory\.md,? items?|Claim C\d|theory\.md, C\d|\(C\d\)")
    sources = [*ROOT.joinpath("kalmanjax").rglob("*.py")]
    sources += [*ROOT.joinpath("notebooks").glob("*.py"), ROOT / "README.md"]
    cited = [str(p.relative_to(ROOT)) for p in sources if old.search(p.read_text())]
    assert cited == []


# ------------------------------------------------ the API reference is whole


@pytest.fixture(scope="module")
def kj_api():
    pytest.importorskip("sphinx")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import kj_api

        yield kj_api
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_api_check_names_what_is_missing(kj_api):
    everything = [
        f"{module}.{name}"
        for module in kj_api.public_modules()
        for name, _ in kj_api._exported(module)
    ]
    assert "kalmanjax.kalman_filter" in everything
    assert "kalmanjax.steps.resampling.systematic" in everything
    assert kj_api.missing_names(everything) == []
    # documenting kj.kalman_filter once covers its other paths too
    without = [n for n in everything if not n.endswith(".kalman_filter")]
    assert kj_api.missing_names([*without, "kalmanjax.kalman_filter"]) == []
    missing = kj_api.missing_names(without)
    assert "kalmanjax.kalman_filter" in missing
    assert "kalmanjax.filters.kalman.kalman_filter" in missing
    assert not [n for n in missing if not n.endswith(".kalman_filter")]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The built site: CI's (``$KALMANJAX_DOCS_HTML``), or one built here."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    built = os.environ.get("KALMANJAX_DOCS_HTML")
    if built:
        path = Path(built)
        assert (path / "index.html").exists(), f"{built} holds no built site"
        return path
    out = tmp_path_factory.mktemp("docs") / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    # the how-tos are executed by CI's build; here only the site is checked
    cmd += ["-D", "nb_execution_mode=off", str(DOCS), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


@pytest.mark.timeout(660)
def test_the_site_documents_every_public_name(site, kj_api):
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    entries = getattr(inventory, "data", inventory)  # Sphinx < 8.2 returned a dict
    documented = [name for kind in entries for name in entries[kind]]
    assert kj_api.missing_names(documented) == []
    for page in ("theory", "conventions", "getting-started", "howto/parallel"):
        assert (site / f"{page}.html").exists(), page
    for notebook in ROOT.joinpath("notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / f"{notebook.stem}.html").exists(), notebook.name


# ------------------------------------------------ the site in a real browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",  # lets MathJax typeset before the DOM is read
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on localhost (MathJax's fonts do not load from file://)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is needed: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI installs it in .ci/run)")
        pytest.skip(message)
    return found


def _browse(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(660)
def test_chromium_shows_a_page_an_api_entry_and_an_equation(served, site, tmp_path):
    theory = _browse(f"{served}/theory.html", tmp_path, "--dump-dom")
    assert theory.returncode == 0, theory.stderr[-2000:]
    assert "The theory and its claims" in theory.stdout
    # MathJax turned the TeX into CHTML glyphs: no raw \theta is left in the math
    math = re.findall(r"<mjx-container[^>]*>(.*?)</mjx-container>", theory.stdout)
    assert len(math) > 20, "MathJax did not typeset the page"
    assert all("<mjx-c" in m for m in math)
    assert "\\theta_t = A" not in re.sub(r"<script.*?</script>", "", theory.stdout)

    api = _browse(f"{served}/api/kalmanjax.html", tmp_path, "--dump-dom")
    assert api.returncode == 0, api.stderr[-2000:]
    entry = re.search(r'id="kalmanjax\.kalman_filter".*?</dl>', api.stdout, re.S)
    assert entry is not None, "no API entry for kalmanjax.kalman_filter"
    assert "form" in entry.group(0)  # its signature and docstring are there

    shot = site.parent / "screenshots" / "theory.png"
    shot.parent.mkdir(exist_ok=True)
    png = _browse(
        f"{served}/theory.html",
        tmp_path,
        "--window-size=1200,1600",
        f"--screenshot={shot}",
    )
    assert png.returncode == 0, png.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    print(f"screenshot of the theory page: {shot}")
