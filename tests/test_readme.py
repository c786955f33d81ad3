"""The README's Python examples run, and print what their comments say."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
assert BLOCKS


def test_readme_examples_run_and_print_what_they_claim():
    namespace: dict = {}
    for block in BLOCKS:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(block, str(README), "exec"), namespace)
        printed = [line.strip() for line in buf.getvalue().splitlines()]
        prints = [ln for ln in block.splitlines() if ln.lstrip().startswith("print(")]
        claimed = [re.search(r"#\s*(.*)$", ln).group(1).strip() for ln in prints]
        assert printed == claimed
