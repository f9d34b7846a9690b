"""The textfile of playbooks/report.yml read by the real node_exporter and Prometheus (Debian's
prometheus-node-exporter and prometheus packages), on the real kernel.

node_exporter runs on loopback with its ksmd collector and the textfile collector; Prometheus
(own config, own TSDB in a temp dir, 1 s scrape interval) scrapes it. Both are stopped at the end.
"""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
sys.path.insert(0, str(ROOT / "build" / "collections"))

from ansible_collections.samepage.ksm.plugins.filter import ksm_prometheus as flt  # noqa: E402
from ksm_workload import Workload  # noqa: E402

MIB = 1048576
DASHBOARD = ROOT / "extensions" / "dashboards" / "samepage-ksm.json"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def wait_http(url, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("%s exited with %s" % (what, proc.returncode))
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("%s did not answer %s within %d s" % (what, url, timeout))


TICKS = os.sysconf("SC_CLK_TCK")
# A hardware node whose KSM metadata costs more than it saves: general_profit is negative.
FAKE_KNOBS = {"run": 1, "pages_to_scan": 1000, "sleep_millisecs": 50, "merge_across_nodes": 1, "max_page_sharing": 256,
              "use_zero_pages": 1, "smart_scan": 1, "stable_node_chains_prune_millisecs": 2000,
              "advisor_mode": "none [scan-time]", "advisor_max_cpu": 70, "advisor_min_pages_to_scan": 500,
              "advisor_max_pages_to_scan": 30000, "advisor_target_scan_time": 200}
FAKE_COUNTERS = {"pages_shared": 3, "pages_sharing": 40, "pages_unshared": 260000, "pages_volatile": 7,
                 "ksm_zero_pages": 12, "general_profit": -16474112, "full_scans": 9, "pages_scanned": 2340000,
                 "pages_skipped": 1200, "stable_node_chains": 0, "stable_node_dups": 0}


def make_fake_node(base):
    """A sys tree (for node_exporter --path.sysfs and ksm_info sysfs_path) and a /proc with ksmd."""
    sysfs = base / "sys" / "kernel" / "mm" / "ksm"
    sysfs.mkdir(parents=True)
    for name, value in dict(FAKE_KNOBS, **FAKE_COUNTERS).items():
        (sysfs / name).write_text("%s\n" % value)
    ksmd = base / "proc" / "41"
    ksmd.mkdir(parents=True)
    (ksmd / "comm").write_text("ksmd\n")
    (ksmd / "stat").write_text("41 (ksmd) S 2 0 0 0 -1 2097216 0 0 0 0 %d %d %s\n"
                               % (7 * TICKS, 2 * TICKS, " ".join(["0"] * 37)))
    return base / "sys", sysfs, base / "proc"


class Stack:
    """Two node_exporters (the real kernel; a fake node through --path.sysfs) and Prometheus
    scraping both, on free loopback ports; started and stopped by the test."""

    def __init__(self, base):
        self.base = base
        self.textfile_dirs = {"real": base / "textfile-real", "fake": base / "textfile-fake"}
        for path in self.textfile_dirs.values():
            path.mkdir()
        self.fake_sys, self.fake_sysfs, self.fake_proc = make_fake_node(base / "fakenode")
        self.ports = {"real": free_port(), "fake": free_port()}
        self.prometheus_port = free_port()
        self.procs = []

    def instance(self, node):
        return "127.0.0.1:%d" % self.ports[node]

    def start(self):
        for binary in (NODE_EXPORTER, PROMETHEUS, PROMTOOL):
            if not os.access(binary, os.X_OK):
                pytest.fail("%s is missing: scripts/bootstrap.sh test installs prometheus-node-exporter and prometheus"
                            % binary)
        for node, sysfs in (("real", "/sys"), ("fake", self.fake_sys)):
            exporter = self._spawn("node_exporter-%s" % node, [
                NODE_EXPORTER, "--web.listen-address=%s" % self.instance(node), "--path.sysfs=%s" % sysfs,
                "--collector.disable-defaults", "--collector.ksmd", "--collector.textfile",
                "--collector.textfile.directory=%s" % self.textfile_dirs[node]])
            wait_http("http://%s/metrics" % self.instance(node), exporter, "node_exporter")
        config = self.base / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: node\n    static_configs:\n"
            "      - targets: ['%s', '%s']\n" % (self.instance("real"), self.instance("fake")))
        prometheus = self._spawn("prometheus", [
            PROMETHEUS, "--config.file=%s" % config, "--storage.tsdb.path=%s" % (self.base / "tsdb"),
            "--web.listen-address=127.0.0.1:%d" % self.prometheus_port])
        wait_http("http://127.0.0.1:%d/-/ready" % self.prometheus_port, prometheus, "prometheus")
        return self

    def _spawn(self, name, argv):
        log = open(self.base / ("%s.log" % name), "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.base)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def query(self, expr):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.prometheus_port, urllib.parse.urlencode({"query": expr}))
        data = http_json(url)
        assert data["status"] == "success", (expr, data)
        return data["data"]["result"]

    def value(self, expr):
        result = self.query(expr)
        assert len(result) == 1, "%s: expected one series, got %r" % (expr, result)
        return float(result[0]["value"][1])

    def metric_names(self):
        url = "http://127.0.0.1:%d/api/v1/label/__name__/values" % self.prometheus_port
        return set(http_json(url)["data"])


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    try:
        yield stack.start()
    finally:
        stack.stop()


def parse_textfile(path):
    """{series selector: value} for every sample line of a textfile."""
    series = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            selector, value = line.rsplit(" ", 1)
            series[selector] = float(value)
    return series


def on_instance(selector, instance):
    if "{" in selector:
        return selector.replace("{", '{instance="%s",' % instance, 1)
    return '%s{instance="%s"}' % (selector, instance)


def run_report(tmp, stack):
    inventory = tmp / "inventory.ini"
    python = "ansible_connection=local ansible_python_interpreter=%s" % sys.executable
    inventory.write_text(
        "localhost %s ksm_report_textfile_dir=%s\n" % (python, stack.textfile_dirs["real"])
        + "fakenode %s ksm_report_textfile_dir=%s ksm_report_sysfs_path=%s ksm_report_proc_path=%s\n"
        % (python, stack.textfile_dirs["fake"], stack.fake_sysfs, stack.fake_proc))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "report.yml"),
         "-e", "ksm_report_dir=%s" % (tmp / "report"), "-e", "ksm_report_top_processes=5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    report = json.loads((tmp / "report" / "ksm-report.json").read_text())
    return proc.stdout, {h["host"]: h for h in report["hosts"]}, (tmp / "report" / "ksm-report.md").read_text()


def wait_for_scrape(stack, path, timeout=20):
    """Until Prometheus holds a scrape of this version of the file (node_exporter reports its mtime)."""
    mtime = os.stat(path).st_mtime
    expr = 'node_textfile_mtime_seconds{file="%s"}' % path
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = stack.query(expr)
        if result and abs(float(result[0]["value"][1]) - mtime) < 1:
            time.sleep(1.5)  # one more scrape interval: that scrape's samples are all queryable now
            return
        time.sleep(0.3)
    raise AssertionError("Prometheus did not scrape %s (mtime %s) within %d s: %r"
                         % (path, mtime, timeout, stack.query(expr)))


def markdown_row(markdown, host):
    for line in markdown.splitlines():
        if line.startswith("| %s |" % host):
            return line
    raise AssertionError("no row for %s" % host)


def wait_full_scans(sysfs, count, timeout=60):
    target = int((sysfs / "full_scans").read_text()) + count
    deadline = time.monotonic() + timeout
    while int((sysfs / "full_scans").read_text()) < target:
        assert time.monotonic() < deadline, "ksmd did not complete %d full scans in %d s" % (count, timeout)
        time.sleep(0.1)


def expected_answers(stack, host, node):
    """PromQL -> the value the report holds for that host."""
    sel = '{instance="%s"}' % stack.instance(node)
    return {
        "samepage_ksm_saved_bytes" + sel: host["saved_bytes"],
        "samepage_ksm_general_profit_bytes" + sel: host["general_profit_bytes"],
        "samepage_ksm_ksmd_running" + sel: 1 if host["ksmd_running"] else 0,
        "samepage_ksm_ksmd_cpu_seconds_total" + sel: host["ksmd_cpu_seconds"],
        "samepage_ksm_zero_pages" + sel: host["counters"]["ksm_zero_pages"],
        "samepage_ksm_pages_scanned_total" + sel: host["counters"]["pages_scanned"],
        "samepage_ksm_pages_skipped_total" + sel: host["counters"]["pages_skipped"],
        # node_exporter's own ksmd collector reads the same (frozen) counters
        "node_ksmd_pages_sharing" + sel: host["counters"]["pages_sharing"],
        "node_ksmd_pages_shared" + sel: host["counters"]["pages_shared"],
        "node_ksmd_full_scans_total" + sel: host["full_scans"],
        "node_ksmd_run" + sel: host["run"],
    }


def test_report_textfile_in_real_node_exporter_and_prometheus(real_ksm, stack, tmp_path):
    started = time.monotonic()
    with Workload(mib=8, procs=2, opt_in="madvise"):
        # scan until the workload is merged, then stop ksmd: the counters hold still while the
        # report, node_exporter's ksmd collector and the textfile are compared
        (real_ksm / "advisor_mode").write_text("none")
        (real_ksm / "pages_to_scan").write_text("5000")
        (real_ksm / "sleep_millisecs").write_text("20")
        (real_ksm / "run").write_text("1")
        wait_full_scans(real_ksm, 3)
        (real_ksm / "run").write_text("0")

        stdout, hosts, markdown = run_report(tmp_path, stack)
        real, fake = hosts["localhost"], hosts["fakenode"]
        assert real["status"] == "ok" and real["run"] == 0 and real["saved_bytes"] >= 8 * MIB, real
        assert fake["status"] == "ok" and fake["general_profit_bytes"] == -16474112, fake

        for node in ("real", "fake"):
            textfile = stack.textfile_dirs[node] / "ksm.prom"
            lint = subprocess.run([PROMTOOL, "check", "metrics"], input=textfile.read_text(), capture_output=True,
                                  text=True, check=False)
            assert lint.returncode == 0 and lint.stdout + lint.stderr == "", (node, lint.stdout + lint.stderr)
            assert sorted(p.name for p in stack.textfile_dirs[node].iterdir()) == [".ksm.prom.staged", "ksm.prom"]
            wait_for_scrape(stack, textfile)
            # every sample of the textfile is in Prometheus, value for value
            for selector, value in parse_textfile(textfile).items():
                assert stack.value(on_instance(selector, stack.instance(node))) == value, (node, selector)

        # PromQL answers what the report printed, for both nodes
        printed = " ".join(stdout.split())  # the play's YAML output may wrap long lines
        lines = []
        for node, host in (("real", real), ("fake", fake)):
            queries = expected_answers(stack, host, node)
            answers = {expr: stack.value(expr) for expr in queries}
            assert answers == {expr: float(value) for expr, value in queries.items()}, node
            row = markdown_row(markdown, host["host"])
            cells = [c.strip() for c in row.split(" | ")]
            sel = '{instance="%s"}' % stack.instance(node)
            assert cells[2] == "%.2f" % (answers["samepage_ksm_saved_bytes" + sel] / MIB)
            assert cells[3] == "%.2f" % (answers["samepage_ksm_general_profit_bytes" + sel] / MIB)
            assert cells[6] == "%d" % answers["node_ksmd_full_scans_total" + sel]
            assert " ".join(row.split()) in printed, stdout[-3000:]
            lines.append((row, answers))
            assert stack.value('up{instance="%s"}' % stack.instance(node)) == 1
            assert stack.value('node_textfile_scrape_error{instance="%s"}' % stack.instance(node)) == 0
            # the ksmd collector is fine beside a negative general_profit
            assert stack.value('node_scrape_collector_success{collector="ksmd",instance="%s"}'
                               % stack.instance(node)) == 1
        assert stack.value('samepage_ksm_advisor_mode{instance="%s",mode="scan-time"}' % stack.instance("fake")) == 1

        # every dashboard query is valid PromQL that returns data from this stack, and names
        # only metrics that node_exporter (ksmd collector, textfile) exports
        exported = stack.metric_names()
        for title, expr in dashboard_queries():
            names = metric_names_in(expr)
            assert names and names <= exported, (title, names - exported)
            assert stack.query(expr), "dashboard panel %r returns no data: %s" % (title, expr)

        for row, answers in lines:
            print("report line: %s" % row)
            print("PromQL over Prometheus's HTTP API:")
            for expr, answer in answers.items():
                print("  %s => %s" % (expr, _number(answer)))
        print("stack + report + queries took %.1f s" % (time.monotonic() - started))


def _number(value):
    return "%d" % value if value == int(value) else repr(value)


# --- the dashboard ------------------------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "rate", "irate", "increase", "delta", "deriv", "abs", "clamp_min", "clamp_max",
    "topk", "bottomk", "offset", "bool", "time", "timestamp", "vector", "scalar", "label_replace", "max_over_time",
    "min_over_time", "avg_over_time", "changes", "resets", "absent", "sort_desc", "sort", "round", "ceil", "floor",
}


def dashboard_queries():
    """(panel title, PromQL) of every target, with the dashboard's variables put in."""
    board = json.loads(DASHBOARD.read_text())
    panels = []

    def walk(items):
        for panel in items:
            panels.append(panel)
            walk(panel.get("panels", []))

    walk(board["panels"])
    queries = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in (("$__rate_interval", "1m"), ("$__interval", "15s"), ("$__range", "1h"),
                                ("$instance", ".+"), ("$job", ".+")):
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            definition = variable["definition"]
            # label_values(metric, label): the metric must exist too
            queries.append(("variable %s" % variable["name"],
                            definition.split("(", 1)[1].split(",", 1)[0].strip().replace("$job", ".+")))
    return queries


def metric_names_in(expr):
    """Metric names in a PromQL expression: identifiers outside {...} and [...] that are no
    function, keyword or label name of a by()/without()/on() clause."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()[:1]
        if word in PROMQL_WORDS or following == "(" or re.match(r"^\d", word):
            continue
        names.add(word)
    return names


def test_dashboard_expressions_are_valid_promql(tmp_path):
    """promtool parses every panel query (as a recording rule); no running stack needed."""
    queries = dashboard_queries()
    assert len(queries) >= 8
    rules = tmp_path / "dashboard-rules.yml"
    lines = ["groups:", "  - name: samepage-ksm-dashboard", "    rules:"]
    for index, (_title, expr) in enumerate(queries):
        lines += ["      - record: samepage_ksm_dashboard:query%d" % index, "        expr: %s" % json.dumps(expr)]
    rules.write_text("\n".join(lines) + "\n")
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: %d rules found" % len(queries) in check.stdout
    # names: only the textfile's samepage_ksm_* (as the filter documents them) and node_ksmd_*
    textfile = {flt.PREFIX + m[0] for m in flt.METRICS} | {flt.PREFIX + m[0] for m in flt.GROUP_METRICS} | {
        flt.PREFIX + n for n in ("available", "ksmd_running", "ksmd_cpu_seconds_total", "advisor_mode")}
    ksmd = {"node_ksmd_full_scans_total", "node_ksmd_merge_across_nodes", "node_ksmd_pages_shared",
            "node_ksmd_pages_sharing", "node_ksmd_pages_to_scan", "node_ksmd_pages_unshared",
            "node_ksmd_pages_volatile", "node_ksmd_run", "node_ksmd_sleep_seconds"}
    for title, expr in queries:
        names = metric_names_in(expr)
        assert names and names <= textfile | ksmd, (title, names - textfile - ksmd)
