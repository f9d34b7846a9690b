"""SysV container: one managed block right after the init script's PATH export.

Library: the fixture (prctl in its constructor)."""
BEGIN = "# BEGIN samepage.ksm LD_PRELOAD ksm-demo"
END = "# END samepage.ksm LD_PRELOAD ksm-demo"
INIT_SCRIPT = "/etc/init.d/ksm-demo"
LIBRARY = "/usr/lib64/libksm_preload.so"

testinfra_hosts = ["podman://samepage-container-sysv"]


def test_init_script_has_one_block_after_path_export(host):
    script = host.file(INIT_SCRIPT)
    text = script.content_string
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    lines = text.splitlines()
    begin, end = lines.index(BEGIN), lines.index(END)
    assert lines[begin - 1] == "export PATH"  # the seed's position
    block = "\n".join(lines[begin:end + 1])
    assert LIBRARY in block and "export LD_PRELOAD" in block
    assert script.mode == 0o755 and script.user == "root"


def test_init_script_still_parses(host):
    assert host.run("sh -n %s", INIT_SCRIPT).rc == 0


def test_no_systemd_artefacts(host):
    assert not host.file("/etc/systemd/system/ksm-demo.service.d").exists
