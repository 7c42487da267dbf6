# Sourced by scripts/install-*.sh: installs one pinned PyPI package into a virtualenv (creating it,
# with Debian's python3-venv if `python3 -m venv` needs it), unless the pinned version already
# loads there. Usage: pip_venv VENV PACKAGE VERSION CHECK, where CHECK is python code run in the
# virtualenv after `assert version(PACKAGE) == VERSION` that must not raise once it is installed.
# Prints the virtualenv's python on stdout; everything else goes to stderr.
pip_venv() {
    local venv="$1" package="$2" version="$3" check="$4"
    local python="$venv/bin/python"
    installed() {
        [ -x "$python" ] && "$python" - "$package" "$version" >/dev/null 2>&1 <<PY
import sys
from importlib.metadata import version
assert version(sys.argv[1]) == sys.argv[2]
$check
PY
    }
    if ! installed; then
        echo "--- installing $package $version into $venv" >&2
        command -v python3 >/dev/null 2>&1 || { echo "python3 (3.10 or later) is needed" >&2; return 1; }
        if [ ! -x "$python" ]; then
            if ! python3 -m venv "$venv" >&2; then
                # Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv`.
                rm -rf "$venv"
                as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
                echo "--- installing python3-venv (Debian package)" >&2
                as_root apt-get update -qq >&2
                DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3-venv >&2
                python3 -m venv "$venv" >&2
            fi
        fi
        "$python" -m pip install --quiet --disable-pip-version-check "$package==$version" >&2
        installed || { echo "$package $version did not load" >&2; return 1; }
    fi
    echo "$python"
}
