#!/usr/bin/env bash
# ansible-test sanity needs the collection at .../ansible_collections/samepage/ksm: copy the
# files git would ship (tracked + untracked-but-not-ignored) there and run every sanity test.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv-sanity"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/tests/sanity/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/tests/sanity/requirements.txt"
  echo "$want" > "$stamp"
fi
work=$(mktemp -d /tmp/samepage-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/samepage/ksm"
mkdir -p "$dest"
pip_version=$("$venv/bin/python" -c 'from ansible_test._internal.python_requirements import PIP_VERSION as v; print(v)' 2>/dev/null || echo 24.2)
mkdir -p ~/.ansible/test/cache
cp "$here/tests/sanity/get_pip_offline.py" ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
cd "$here"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] || [ -L "$f" ] || continue   # deleted in the work tree
  cp --parents -P "$f" "$dest/"
done
cd "$dest"
# ansible-test uses git to list files when it finds a repository; give it one.
git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity
PATH="$venv/bin:$PATH" exec "$venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
