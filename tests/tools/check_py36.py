#!/usr/bin/env python
"""Fail when module-side code uses syntax newer than Python 3.6 (it runs on EL7/EL8 targets).

Two independent checks: the 3.11 parser in 3.6 grammar mode, and vermin's minimum-version
analysis (which also catches newer stdlib APIs and f-string '=' specifiers).
"""
import ast
import pathlib
import subprocess
import sys


def main(paths):
    files = sorted(p for root in paths for p in pathlib.Path(root).rglob("*.py"))
    if not files:
        print("check_py36: no files under %s" % " ".join(paths), file=sys.stderr)
        return 1
    bad = 0
    for path in files:
        try:
            ast.parse(path.read_text(), filename=str(path), feature_version=(3, 6))
        except SyntaxError as exc:
            print("%s:%s: not Python 3.6 syntax: %s" % (path, exc.lineno, exc.msg))
            bad += 1
    result = subprocess.run(
        [str(pathlib.Path(sys.executable).with_name("vermin")), "--no-tips", "--violations", "--target=3.6-",
         "--eval-annotations", "--no-parse-comments"] + [str(f) for f in files],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stdout + result.stderr)
        bad += 1
    print("check_py36: %d files, %s" % (len(files), "ok" if not bad else "%d problems" % bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
