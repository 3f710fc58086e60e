"""The package pipectl.files reads pipeline files without pipectl.pipeline, and ``import
pipectl`` does not import it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_pipectl_does_not_import_the_files_package():
    assert (
        _run("""
        import sys
        import pipectl
        print(sorted(m for m in sys.modules if m.startswith("pipectl.files")))
    """)
        == "[]"
    )


def test_the_files_package_reads_a_file_without_pipectl_pipeline(tmp_path):
    (tmp_path / "steps_mod.py").write_text("def one():\n    return 1\n")
    file = tmp_path / "p.yaml"
    file.write_text(
        textwrap.dedent("""\
        pipelines:
          - name: child
            steps: [{name: one, run: steps_mod:one}]
          - name: main
            steps: [{name: sub, pipeline: child}]
    """)
    )
    out = _run(f"""
        import sys
        from pipectl.files import read_pipelines, to_yaml
        loaded, depends = read_pipelines({str(file)!r})
        main = loaded["main"]
        child = main.spec.steps[0].options["pipeline"]
        print(child is loaded["child"], loaded["child"].origin.nested, main.origin.nested,
              "pipectl.pipeline" in sys.modules)
    """)
    assert out == "True True False False"
