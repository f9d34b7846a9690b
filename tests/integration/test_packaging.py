"""What users get: the Galaxy artifact (galaxy.yml build_ignore) and the execution-environment
metadata (meta/execution-environment.yml), checked with ansible-galaxy and PyPI's ansible-builder
(from the release venv that scripts/bootstrap.sh test creates: .cache/release-venv)."""
import os
import pathlib
import subprocess
import tarfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "bin"
RELEASE = ROOT / ".cache" / "release-venv" / "bin"
# Every shipped file is under one of these (the artifact's own MANIFEST.json and FILES.json aside).
SHIPPED = ("plugins/", "roles/", "playbooks/", "meta/", "extensions/", "tests/sanity/ignore-",
           "changelogs/changelog.yaml", "changelogs/config.yaml", "README.md", "LICENSE", "CHANGELOG.rst",
           "MANIFEST.json", "FILES.json")
NOT_SHIPPED = ("Makefile", "benchmarks/", "tests/images/", "tests/fleet/", "tests/unit/", "tests/integration/",
               "tests/tools/", "tests/fixtures/", "molecule/", "scripts/", ".venv", ".ci/", ".cache/", "build/",
               "requirements.txt", "ansible.cfg", "inventory/", "changelogs/fragments/", "pytest.ini")
MUST_SHIP = ("README.md", "LICENSE", "meta/runtime.yml", "meta/execution-environment.yml", "meta/ee-requirements.txt",
             "meta/ee-bindep.txt", "plugins/modules/ksm_info.py", "plugins/modules/ksm_sysfs.py",
             "plugins/modules/ksm_persist.py", "plugins/modules/ld_preload.py", "plugins/module_utils/_ksm.py",
             "plugins/filter/ksm_prometheus.py", "plugins/filter/ksm_fleet_report.py", "roles/node/tasks/main.yml",
             "roles/container/tasks/main.yml", "playbooks/site.yml", "playbooks/report.yml",
             "extensions/dashboards/samepage-ksm.json", "changelogs/changelog.yaml")


def run(argv, **kwargs):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, check=False, **kwargs)
    assert proc.returncode == 0, "%s failed:\n%s\n%s" % (argv, proc.stdout[-4000:], proc.stderr[-4000:])
    return proc.stdout


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact")
    run([VENV / "ansible-galaxy", "collection", "build", "--force", "--output-path", out], cwd=ROOT)
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    path = out / ("samepage-ksm-%s.tar.gz" % version)
    assert path.is_file()
    return path


def test_artifact_ships_what_users_run_and_no_test_tooling(artifact):
    with tarfile.open(artifact) as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
    stray = [f for f in files if not f.startswith(SHIPPED)]
    assert stray == [], "files outside what README says ships: %s" % stray
    tooling = [f for f in files if f.startswith(NOT_SHIPPED)]
    assert tooling == []
    missing = [f for f in MUST_SHIP if f not in files]
    assert missing == []
    # nothing that git tracks in a user-facing directory is left out
    tracked = run(["git", "ls-files", "plugins", "roles", "playbooks", "meta", "extensions"], cwd=ROOT).split()
    dropped = [f for f in tracked if (ROOT / f).is_file() and f not in files and "__pycache__" not in f]
    assert dropped == []
    size = artifact.stat().st_size
    assert size < 2 * 1024 * 1024, "artifact is %d bytes" % size
    print("artifact: %d files, %d KiB" % (len(files), size // 1024))


def test_execution_environment_metadata_with_ansible_builder(artifact, tmp_path):
    builder = RELEASE / "ansible-builder"
    if not os.access(builder, os.X_OK):
        pytest.fail("%s is missing: run scripts/bootstrap.sh test" % builder)
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 3
    assert meta["dependencies"] == {"python": "meta/ee-requirements.txt", "system": "meta/ee-bindep.txt"}

    # A user's EE definition that installs the collection from the artifact
    ee = tmp_path / "ee"
    ee.mkdir()
    (ee / artifact.name).write_bytes(artifact.read_bytes())
    (ee / "execution-environment.yml").write_text(yaml.safe_dump({
        "version": 3,
        "images": {"base_image": {"name": "quay.io/fedora/fedora:41"}},
        "dependencies": {
            "python_interpreter": {"package_system": "python3", "python_path": "/usr/bin/python3"},
            "ansible_core": {"package_pip": "ansible-core==2.19.14"},
            "ansible_runner": {"package_pip": "ansible-runner"},
            "galaxy": {"collections": [{"name": "/build/collections/%s" % artifact.name, "type": "file"}]},
        },
        "additional_build_files": [{"src": artifact.name, "dest": "collections"}],
    }, sort_keys=False))
    out = run([builder, "create", "-f", "execution-environment.yml", "-c", "context", "-v", "3"], cwd=ee)
    assert "Complete! The build context can be found at" in out
    context = ee / "context"
    containerfile = (context / "Containerfile").read_text()
    for expected in ('ARG EE_BASE_IMAGE="quay.io/fedora/fedora:41"',
                     'ARG ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner"',
                     "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml",
                     "introspect.py introspect --write-bindep=/tmp/src/bindep.txt --write-pip=/tmp/src/requirements.txt",
                     "RUN /output/scripts/install-from-bindep"):
        assert expected in containerfile, expected
    assert yaml.safe_load((context / "_build" / "requirements.yml").read_text()) == {
        "collections": [{"name": "/build/collections/%s" % artifact.name, "type": "file"}]}
    assert (context / "_build" / "collections" / artifact.name).read_bytes() == artifact.read_bytes()
    for script in ("assemble", "introspect.py", "install-from-bindep", "check_galaxy", "check_ansible"):
        assert (context / "_build" / "scripts" / script).is_file(), script

    # The image's introspect step, run here by its own script on the installed artifact: it
    # finds this collection's requirement files through meta/execution-environment.yml
    collections = tmp_path / "collections"
    run([VENV / "ansible-galaxy", "collection", "install", "--offline", "--force", "-p", collections, artifact])
    assert (collections / "ansible_collections" / "samepage" / "ksm" / "meta" / "ee-bindep.txt").is_file()
    bindep, pip = tmp_path / "bindep.txt", tmp_path / "requirements.txt"
    out = run([RELEASE / "python", context / "_build" / "scripts" / "introspect.py", "introspect", "--sanitize",
               "--write-bindep=%s" % bindep, "--write-pip=%s" % pip, collections])
    report = yaml.safe_load(out)
    assert report == {"python": [], "system": ["openssh-clients [platform:rpm]  # from collection samepage.ksm",
                                               "openssh-client [platform:dpkg]  # from collection samepage.ksm"]}
    assert not pip.exists()  # the collection needs no Python package beyond ansible-core
    # bindep itself resolves the list for this (dpkg) platform
    assert run([RELEASE / "bindep", "-f", bindep, "-l", "newline"]).split() == ["openssh-client"]
