"""Keep the documentation honest.

The Sphinx build itself runs under ``tox -e docs``; these tests check, without
Sphinx, what the build relies on: the generator in ``docs/_ext/runfcgi_docs.py``
covers every option and produces every file a page includes, the pages are all
reachable, the configurations shown are the ones the integration tests run,
and the README's commands exist.
"""
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

from runfcgi_compat import frontends
from runfcgi_compat.options import OPTIONS, OPTIONS_BY_NAME

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def load_generator():
    path = DOCS / "_ext" / "runfcgi_docs.py"
    spec = importlib.util.spec_from_file_location("runfcgi_docs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


gen = load_generator()


@pytest.fixture(scope="module")
def generated():
    return gen.generated_files()


def pages():
    """Every hand-written page, as {docname: text}."""
    found = {}
    for path in DOCS.rglob("*.rst"):
        relative = path.relative_to(DOCS)
        if relative.parts[0] in ("_build", "_generated"):
            continue
        found[relative.with_suffix("").as_posix()] = path.read_text()
    return found


# -- the options reference ------------------------------------------------------


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.name)
def test_every_option_has_an_entry_with_its_default(option, generated):
    reference = generated["options.rst"]
    entry = f".. option:: {option.name}={option.metavar}\n\n   {option.help}\n"
    assert entry in reference
    assert f":option:`{option.name} <runfcgi {option.name}>`" in reference
    assert f"   :Default: ``{option.default_text}``" in reference


def test_every_caster_is_described():
    for option in OPTIONS:
        assert gen.accepted_values(option)


def test_number_ranges_are_read_from_the_casters():
    assert gen.accepted_values(OPTIONS_BY_NAME["port"]) == "a whole number from 1 to 65,535"


def test_choices_are_read_from_the_caster():
    assert gen.accepted_values(OPTIONS_BY_NAME["protocol"]) == "fcgi, scgi, ajp"
    assert "fork for prefork" in gen.accepted_values(OPTIONS_BY_NAME["method"])


def test_see_also_names_real_options():
    assert set(gen.SEE_ALSO) <= set(OPTIONS_BY_NAME)


def test_django_18_options_are_all_still_there():
    assert set(gen.DJANGO_18_OPTIONS) <= set(OPTIONS_BY_NAME)


def test_help_output_is_the_commands_help(generated):
    for option in OPTIONS:
        assert f"{option.name}={option.metavar}" in generated["help.rst"]


def test_quoted_errors_are_one_line_each(generated):
    block = generated["errors-options.rst"]
    commands = [line for line in block.splitlines() if line.strip().startswith("$ ./manage")]
    errors = [line for line in block.splitlines() if "CommandError: " in line]
    assert len(commands) == len(errors) == len(gen.OPTION_MISTAKES)
    assert "Error: method='threded' is not one of" in generated["errors-runfastcgi.rst"]
    assert "False" in generated["errors-runfastcgi.rst"]


def test_start_up_errors_show_the_docs_paths_not_temporary_ones(generated):
    for name, text in generated.items():
        if name.startswith("errors-startup-"):
            assert "CommandError: " in text
            assert "/tmp" not in text, name


# -- pages ----------------------------------------------------------------------


def toctree_entries(text):
    entries = []
    for block in re.findall(r"^\.\. toctree::\n((?:[ \t]+.*\n|\n)*)", text, re.M):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                entries.append(line)
    return entries


def test_every_page_is_in_a_toctree_and_every_entry_is_a_page():
    found = pages()
    listed = [entry for text in found.values() for entry in toctree_entries(text)]
    assert sorted(listed) == sorted(set(listed)), "a page is listed twice"
    assert set(listed) == set(found) - {"index"}


def test_every_generated_include_exists(generated):
    for name, text in pages().items():
        for target in re.findall(r"include:: /_generated/(\S+)", text):
            assert target in generated, f"{name} includes {target}, which is not generated"


def test_pages_show_no_hand_written_configuration():
    # Configurations come from runfcgi_compat.frontends through _generated/.
    for name, text in pages().items():
        found = re.findall(r"code-block:: (nginx|apache|lighttpd|systemd|ini)\b", text)
        assert not found, f"{name} has a hand-written {found[0]} block"


def test_option_links_name_real_options():
    for name, text in pages().items():
        for target in re.findall(r":option:`([^`]+)`", text):
            option = target.split("<")[-1].rstrip(">").split()[-1]
            assert option in OPTIONS_BY_NAME, f"{name} links to unknown option {option!r}"


def test_migration_page_covers_every_django_18_option():
    text = pages()["migrating"]
    for name in gen.DJANGO_18_OPTIONS:
        assert f"   * - ``{name}``" in text, name
    assert "from runfcgi_compat.fastcgi import runfastcgi" in text
    assert "from django.core.servers.fastcgi import runfastcgi" in text


# -- configurations -------------------------------------------------------------


@pytest.mark.parametrize("example", gen.EXAMPLES, ids=lambda example: example.filename)
def test_every_example_renders_or_is_optional(example, generated):
    stub = generated[f"conf/{example.filename}.rst"]
    if "literalinclude" in stub:
        assert generated[f"conf/{example.filename}"].strip()
    else:
        assert example.optional, f"frontends.{example.function}() gave nothing"
        assert "Not available yet" in stub
    if not example.optional:
        assert hasattr(frontends, example.function)


def test_examples_claimed_as_tested_name_real_integration_set_ups():
    integration = pytest.importorskip("tests.integration.frontends")
    for example in gen.EXAMPLES:
        if example.tested_by is not None:
            assert example.tested_by in integration.SETUPS, example.filename


def test_untested_examples_say_so(generated):
    for example in gen.EXAMPLES:
        stub = generated[f"conf/{example.filename}.rst"]
        untested = example.tested_by is None and example.tested_in is None
        if "literalinclude" in stub:
            assert ("(not run by the test suite)" in stub) == untested, example.filename


def test_examples_claimed_as_tested_elsewhere_name_real_test_files():
    for example in gen.EXAMPLES:
        if example.tested_in is not None:
            assert (REPO / example.tested_in).is_file(), example.filename


def test_highlighted_lines_are_what_the_example_adds():
    base = "# title\nupstream {\n    server a;\n}\n"
    text = "# other title\nupstream {\n    server a;\n    keepalive 4;\n}\n"
    assert gen.added_lines(base, text) == [4]


# -- the rest ---------------------------------------------------------------------


def test_performance_shows_the_figure_only_when_it_exists(tmp_path):
    figure = tmp_path / "bench.png"
    assert "figure::" not in gen.performance_rst(figure)
    figure.write_bytes(b"\x89PNG")
    assert ".. figure:: /_static/bench.png" in gen.performance_rst(figure)


BENCH_RUN = {
    "started": "2026-01-02T03:04:05",
    "versions": {"git": "abc1234", "cpus": 2},
    "targets": {
        "a": {"label": "runfcgi prefork fcgi", "rps_median": 2606.6, "rps_min": 1415.2,
              "rps_max": 3121.2, "p50_ms": 2.812, "p99_ms": 8.095,
              "cpu_us_per_request": 449.4, "ratio_vs_uwsgi": 0.66},
        "b": {"label": "view called in-process", "rps_median": 5936.0, "p50_ms": None,
              "p99_ms": None, "cpu_us_per_request": 154.1, "ratio_vs_uwsgi": 1.5},
    },
    "checks": [
        {"name": "prefork FastCGI vs uWSGI", "value": 0.66, "goal": ">= 1.0x",
         "status": "MISS", "detail": "rounds 0.45-0.79x"},
        {"name": "fresh *connection*", "value": 0.0015, "goal": "< 1 s", "status": "PASS"},
    ],
}


def test_bench_results_without_a_run_is_a_sentence(tmp_path):
    for content in (None, "", "not json", "[]", '{"targets": {}}', '{"targets": [1]}',
                    '{"targets": {"a": 1}}'):
        path = tmp_path / "latest.json"
        if content is not None:
            path.write_text(content)
        text = gen.bench_results_rst(path)
        assert "list-table" not in text and "bench/run" in text, content
        assert gen.bench_checks_rst(path).startswith(".. "), content  # a comment


def test_bench_results_table_has_a_row_per_set_up(tmp_path):
    import json

    path = tmp_path / "latest.json"
    path.write_text(json.dumps(BENCH_RUN))
    text = gen.bench_results_rst(path)
    assert ".. list-table::" in text
    assert "   * - runfcgi prefork fcgi\n     - 2,607 (1,415–3,121)\n     - 2.8\n" in text
    assert "   * - view called in-process\n     - 5,936\n     - --\n     - --\n" in text
    assert "commit abc1234" in text


def test_bench_checks_are_pass_or_miss_lines_in_the_goals_unit(tmp_path):
    import json

    path = tmp_path / "latest.json"
    path.write_text(json.dumps(BENCH_RUN))
    lines = gen.bench_checks_rst(path).splitlines()
    assert lines == [
        "* **MISS** prefork FastCGI vs uWSGI: 0.66x (goal ≥ 1.0x); rounds 0.45-0.79x",
        "* **PASS** fresh \\*connection\\*: 1.5 ms (goal < 1 s)",
    ]


def test_write_generated_removes_files_no_longer_generated(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "renamed.conf").write_text("old")
    written = gen.write_generated(tmp_path)
    assert not (tmp_path / "conf" / "renamed.conf").exists()
    assert (tmp_path / "options.rst").read_text() == gen.options_reference()
    assert "conf/nginx-unix.conf" in written


def test_readme_commands_are_executable_scripts():
    readme = (REPO / "README.rst").read_text()
    commands = re.findall(r"^    (scripts/\S+)\s*$", readme, re.M)
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert os.access(REPO / command, os.X_OK), command


def test_install_lines_name_the_sdist_python_m_build_writes():
    from runfcgi_compat import __version__

    line = f"pip install dist/runfcgi_compat-{__version__}.tar.gz"
    for page in (REPO / "README.rst", DOCS / "install.rst"):
        text = page.read_text()
        assert line in text and "pip install ." in text, page.name
        assert re.findall(r"pip install runfcgi-compat\b", text) == [
            "pip install runfcgi-compat"], f"{page.name}: the PyPI line, once, as for later"


def headings(text, underline):
    return re.findall(rf"^(\S.*)\n{re.escape(underline)}+\n", text, re.M)


def test_the_changelog_keeps_one_convention():
    text = pages()["changelog"]
    versions = headings(text, "=")
    assert versions[:3] == ["Changelog", "Versions and deprecations", "Unreleased"]
    for version in versions[3:]:  # Released: "1.0.0 - 2027-01-31".
        assert re.fullmatch(r"\d+\.\d+\.\d+ - \d{4}-\d\d-\d\d", version), version
    groups = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
    sections = re.split(r"^\S.*\n=+\n", text, flags=re.M)[3:]
    assert sections and headings(sections[0], "-")  # Unreleased has its groups.
    for section in sections:
        found = headings(section, "-")
        assert found == sorted(found, key=groups.index), found
    assert "docs/changelog.rst" in (REPO / "CHANGELOG.rst").read_text()
    assert headings((REPO / "CHANGELOG.rst").read_text(), "=") == ["Changelog"]  # No entries.


def test_ci_examples_run_what_the_livetests_environment_runs():
    """The testing page's CI examples run the sample project's tests with the
    commands tox's livetests environment runs."""
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    commands = [line.replace(" {posargs}", "").strip()
                for line in tox["testenv:livetests"]["commands"].strip().splitlines()]
    assert commands == ["python -W error manage.py test", "python -W error -m pytest"]
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (DOCS / "ci" / name).read_text()
        run = [line.strip().lstrip("- ").strip() for line in text.splitlines()
               if "manage.py test" in line or "-m pytest" in line]
        assert run == commands, name
        assert "apt-get install -y --no-install-recommends nginx" in text, name
        assert "runfcgi-compat pytest-django" in text, name
    page = (DOCS / "testing.rst").read_text()
    assert ".. literalinclude:: ci/github-actions.yml" in page
    assert ".. literalinclude:: ci/gitlab-ci.yml" in page
