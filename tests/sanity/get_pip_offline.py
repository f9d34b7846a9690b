"""Stand-in for ansible-test's get-pip bootstrap script, which it downloads from a host this
test bed cannot reach: bootstrap pip from the interpreter's own ensurepip wheel, then install the
requested packages (e.g. pip==24.2) from the package index like the real script would."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                      stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
