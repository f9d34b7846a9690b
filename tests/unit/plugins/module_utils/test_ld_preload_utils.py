"""Pure text logic of ld_preload: validation, block placement, env file detection, systemd parsing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.samepage.ksm.plugins.module_utils import _ld_preload as lp

LIB = "/usr/lib64/libksm_preload.so"


# ---------------------------------------------------------------------------------------------
# validation

@pytest.mark.parametrize("name, base", [
    ("mysql", "mysql"), ("mysqld.service", "mysqld"), ("getty@tty1", "getty@tty1"),
    ("foo-bar_baz.1", "foo-bar_baz.1"), ("sys-fs:x", "sys-fs:x"), ("a.service.service", "a.service"),
])
def test_validate_service_accepts(name, base):
    assert lp.validate_service(name) == base


@pytest.mark.parametrize("name, reason", [
    ("", "empty"), (None, "empty"), ("../x", "'/'"), ("/etc/passwd", "'/'"), ("a..b", "'..'"),
    ("-rf", "starts with '-'"), ("a b", "characters"), ("x;y", "characters"), ("..", "'..'"),
    (".", "no usable name"), (".service", "no usable name"), ("-.service", "starts with '-'"),
])
def test_validate_service_rejects(name, reason):
    with pytest.raises(lp.LdPreloadError) as info:
        lp.validate_service(name)
    assert reason in str(info.value)
    assert "expected" in str(info.value)


def test_validate_library():
    assert lp.validate_library(LIB) == LIB
    for bad, needle in [("lib.so", "absolute"), ("/a b.so", "not accepted"), ("/a/./b.so", "normalized"),
                        ("/a/", "normalized"), ("/a$b", "not accepted"), ("/a:b", "not accepted")]:
        with pytest.raises(lp.LdPreloadError) as info:
            lp.validate_library(bad)
        assert needle in str(info.value)


def test_validate_dropin_name():
    assert lp.validate_dropin_name("samepage-ksm.conf") == "samepage-ksm.conf"
    for bad in ("", "x", "a/b.conf", ".hidden.conf", "-x.conf", "..conf", "a b.conf"):
        with pytest.raises(lp.LdPreloadError):
            lp.validate_dropin_name(bad)


# ---------------------------------------------------------------------------------------------
# where the block goes

def line_after(text, offset):
    """The line that ends right before offset."""
    return text[:offset].splitlines()[-1] if offset else None


@pytest.mark.parametrize("script, anchor", [
    ('#!/bin/sh\nPATH="/sbin:/usr/sbin:/bin:/usr/bin:$basedir/bin"\nexport PATH\nmode=$1\n', "export PATH"),
    ("#!/bin/sh\nPATH=/bin\n\n# comment\nexport PATH\nx=1\n", "export PATH"),
    ("#!/bin/sh\nPATH=/bin\nNAME=x\nexport PATH\n", "PATH=/bin"),  # export not next: after PATH=
    ("#!/bin/sh\nPATH=/usr/bin:/bin; export PATH\nx=1\n", "PATH=/usr/bin:/bin; export PATH"),
    ("#!/bin/sh\nexport PATH=/usr/bin:/bin   # tools\nx=1\n", "export PATH=/usr/bin:/bin   # tools"),
    ("#!/bin/sh\nPATH='/bin'\nexport LANG PATH\n", "export LANG PATH"),
    ("#!/bin/sh\nPATH=${PATH}:/opt/bin\n", "PATH=${PATH}:/opt/bin"),
])
def test_path_offset(script, anchor):
    assert line_after(script, lp.path_offset(script)) == anchor


@pytest.mark.parametrize("script", [
    "#!/bin/sh\nf() {\n  PATH=/bin\n  export PATH\n}\n",            # indented: inside a function
    "#!/bin/sh\ncat <<EOF\nPATH=/bin\nEOF\n",                        # inside a here-document
    "#!/bin/sh\necho a \\\nPATH=/bin\n",                             # continues the previous line
    "#!/bin/sh\nPATH=$(getconf PATH)\n",                              # command substitution
    "#!/bin/sh\nPATH=\"/bin\n:/usr/bin\"\n",                          # value spans lines
    "#!/bin/sh\n# PATH=/bin\n",
])
def test_path_offset_ignores_unsafe_lines(script):
    assert lp.path_offset(script) is None


def test_path_after_heredoc_is_found():
    script = "#!/bin/sh\ncat <<-'EOF'\n\tPATH=/x\n\tEOF\nPATH=/bin\nexport PATH\n"
    assert line_after(script, lp.path_offset(script)) == "export PATH"


def test_fallback_offset_after_lsb_header_and_comments():
    script = ("#!/bin/sh\n### BEGIN INIT INFO\n# Provides: x\n### END INIT INFO\n\n# about\n\n"
              "DAEMON=/usr/sbin/x\n")
    assert script[lp.fallback_offset(script):] == "DAEMON=/usr/sbin/x\n"
    assert lp.script_offset(script) == (lp.fallback_offset(script), "fallback")
    only_comments = "#!/bin/sh\n# nothing\n"
    assert lp.fallback_offset(only_comments) == len(only_comments)


def test_script_offset_goes_after_own_ld_preload():
    script = "#!/bin/sh\nPATH=/bin\nexport PATH\nA=1\nLD_PRELOAD=/opt/o.so\nexport LD_PRELOAD\nB=2\n"
    offset, rule = lp.script_offset(script)
    assert rule == "after-ld-preload" and line_after(script, offset) == "export LD_PRELOAD"
    before_path = "#!/bin/sh\nexport LD_PRELOAD=/opt/o.so\nPATH=/bin\nexport PATH\n"
    offset, rule = lp.script_offset(before_path)
    assert rule == "path" and line_after(before_path, offset) == "export PATH"


@pytest.mark.parametrize("text, sets", [
    ("LD_PRELOAD=/x.so\n", True), ("export LD_PRELOAD=/x.so\n", True), ("  export FOO LD_PRELOAD\n", True),
    ("env LD_PRELOAD=/x.so prog\n", True), ('echo "LD_PRELOAD=$LD_PRELOAD"\n', False),
    ("# LD_PRELOAD=/x.so\n", False), ("", False), (None, False),
])
def test_mentions_preload(text, sets):
    assert lp.mentions_preload(text) is sets


def test_block_bodies_run_in_sh():
    """The guarded form appends once, whatever separator the inherited value uses."""
    body = lp.shell_block_body(LIB, 7, append=True)
    script = lp.render(body, "demo") + 'printf "%s|%s" "$LD_PRELOAD" "$KSMP_MERGE_THRESHOLD"\n'
    for inherited, expected in [
        (None, LIB), ("/a.so", "/a.so " + LIB), ("/a.so " + LIB, "/a.so " + LIB),
        ("/a.so:" + LIB, "/a.so:" + LIB), (LIB + ".1", LIB + ".1 " + LIB), ("", LIB),
    ]:
        env = {"PATH": "/bin:/usr/bin"}
        if inherited is not None:
            env["LD_PRELOAD"] = inherited
        out = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=True)
        assert out.stdout == "%s|7" % expected
    assert lp.shell_block_body(LIB, None, append=False) == ["LD_PRELOAD=" + LIB, "export LD_PRELOAD"]


def test_put_and_remove_without_final_newline():
    text = "#!/bin/sh\nPATH=/bin"
    block = lp.render(["LD_PRELOAD=" + LIB, "export LD_PRELOAD"], "demo")
    added = lp.put_block(text, block, len(text), "demo")
    assert added == text + "\n" + block.rstrip("\n")
    assert lp.put_block(added, block, 0, "demo") == added
    assert lp.remove_our_block(added, "demo") == text
    assert lp.remove_our_block(text, "demo") == text and lp.remove_our_block(None, "demo") is None


# ---------------------------------------------------------------------------------------------
# env files sourced by init scripts

def test_sourced_files_resolves_literal_variables():
    script = ('#!/bin/sh\nNAME=demo\nprog="httpd"\n[ -r /etc/default/$NAME ] && . /etc/default/$NAME\n'
              'if [ -f /etc/sysconfig/${prog} ]; then . "/etc/sysconfig/${prog}"; fi\n'
              'source /etc/init.d/functions\n. $UNSET/x\n# . /etc/default/commented\n. ./relative\n')
    assert lp.sourced_files(script) == ["/etc/default/demo", "/etc/sysconfig/httpd", "/etc/init.d/functions"]


# ---------------------------------------------------------------------------------------------
# systemd units

def test_environment_events_and_effective_value():
    unit = ('[Unit]\nEnvironment=LD_PRELOAD=/not/service.so\n[Service]\n# Environment=LD_PRELOAD=/comment.so\n'
            'Environment="LD_PRELOAD=/a.so /b.so" OTHER=1\nEnvironment=\\\n  LD_PRELOAD=/c.so\n'
            "Environment='X=y z'\n")
    events = lp.environment_events(unit)
    assert events == [{"LD_PRELOAD": "/a.so /b.so", "OTHER": "1"}, {"LD_PRELOAD": "/c.so"}, {"X": "y z"}]
    assert lp.effective_variable(events, "LD_PRELOAD") == "/c.so"
    reset = lp.environment_events("[Service]\nEnvironment=LD_PRELOAD=/a.so\nEnvironment=\n")
    assert lp.effective_variable(reset, "LD_PRELOAD") is None
    with pytest.raises(lp.LdPreloadError):
        lp.environment_events('[Service]\nEnvironment="LD_PRELOAD=/a.so\n')


@pytest.mark.parametrize("existing, merged", [
    (None, LIB), ("", LIB), ("  ", LIB), ("/opt/other.so", "/opt/other.so " + LIB),
    ("/a.so:/b.so", "/a.so:/b.so " + LIB), ("/a.so " + LIB, "/a.so " + LIB), (LIB + ":/a.so", LIB + ":/a.so"),
    (LIB + ".1", LIB + ".1 " + LIB),
])
def test_merge_preload(existing, merged):
    assert lp.merge_preload(existing, LIB) == merged


def test_render_dropin_and_ownership():
    text = lp.render_dropin("systemd", '/a "b".so ' + LIB, 5, created_dir=True)
    assert lp.is_our_dropin(text) and lp.DROPIN_CREATED_DIR in text.splitlines()
    assert 'Environment="LD_PRELOAD=/a \\"b\\".so %s"\n' % LIB in text
    events = lp.environment_events(text)
    assert lp.effective_variable(events, "LD_PRELOAD") == '/a "b".so ' + LIB  # round-trips through the parser
    assert lp.render_dropin("memoryksm", None, None, False).endswith("[Service]\nMemoryKSM=yes\n")
    assert not lp.is_our_dropin("[Service]\n") and not lp.is_our_dropin(None)


def test_versions():
    assert lp.parse_systemd_version("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT") == 252
    assert lp.parse_systemd_version("garbage") is None
    assert lp.parse_kernel_release("6.18.44-fc-v782") == (6, 18)
    assert lp.parse_kernel_release("4.18.0-553.el8_10.x86_64") == (4, 18)
    assert lp.parse_kernel_release("") is None
    assert (6, 10) >= lp.MEMORYKSM_KERNEL > (6, 3)


def test_unit_names():
    assert lp.unit_names("getty@tty1") == ["getty@tty1.service", "getty@.service"]
    assert lp.unit_names("mysql") == ["mysql.service"]


# ---------------------------------------------------------------------------------------------
# property: for scripts with a PATH line, add then remove gives back the original bytes

PATH_LINES = st.sampled_from([
    'PATH="/sbin:/usr/sbin:/bin:/usr/bin:$basedir/bin"\nexport PATH\n',
    "PATH=/sbin:/usr/sbin:/bin:/usr/bin\n",
    "PATH=/usr/bin:/bin; export PATH\n",
    "export PATH=/usr/bin:/bin\n",
    "PATH='/bin'\n\n# tools\nexport PATH\n",
])
# Lines without our markers: shell-ish and arbitrary text (which may open here-documents, etc.).
OTHER_LINES = st.one_of(
    st.sampled_from(["", "# comment", "### BEGIN INIT INFO", "### END INIT INFO", "NAME=demo", "set -e",
                     'case "$1" in', "  start) run ;;", "esac", "do_start() {", "\tPATH=/x", "}",
                     "cat <<EOF", "EOF", "echo a \\", "LD_PRELOAD=/opt/o.so", "export LD_PRELOAD"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
            max_size=40),
)


@st.composite
def scripts(draw):
    before = draw(st.lists(OTHER_LINES, max_size=8))
    after = draw(st.lists(OTHER_LINES, max_size=8))
    shebang = draw(st.sampled_from(["#!/bin/sh\n", "#! /bin/bash\n", ""]))
    head = "".join(line + "\n" for line in before)
    tail = "".join(line + "\n" for line in after)
    text = shebang + head + draw(PATH_LINES) + tail
    if draw(st.booleans()):
        text = text.rstrip("\n")  # a file without a final newline
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=scripts(), append=st.booleans(), threshold=st.one_of(st.none(), st.integers(0, 10 ** 9)))
def test_add_then_remove_gives_back_original_bytes(text, append, threshold):
    block = lp.render(lp.shell_block_body(LIB, threshold, append), "demo")
    offset, rule = lp.script_offset(text)
    added = lp.put_block(text, block, offset, "demo")
    assert added.count(lp.markers("demo")[0]) == 1
    assert lp.our_block_body(added, "demo") == lp.shell_block_body(LIB, threshold, append)
    assert lp.put_block(added, block, 0, "demo") == added           # idempotent
    assert lp.remove_our_block(added, "demo") == text                # exact inverse
    assert lp.remove_our_block(added, "demo").encode("utf-8", "surrogateescape") == text.encode("utf-8", "surrogateescape")
