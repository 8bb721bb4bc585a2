# Sourced by scripts/demo, scripts/test and scripts/lint: puts the project's virtual
# environment (.venv, git-ignored) first on PATH, making it on first use, and installs
# estcoap into it, editable, with the extras given. Nothing goes into the system's
# Python, which Debian refuses anyway (PEP 668, "externally-managed-environment").
#
#   use_project_venv EXTRAS     e.g. use_project_venv "test,fast,plot", or "" for none
#
# PYTHON picks the interpreter that makes the venv (default: python3 on PATH).
# A virtual environment that is already active is used as it is.

_venv_python_ok() {  # is "$1" a Python 3.11 or later?
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

_venv_create() {
    local python=${PYTHON:-python3}
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "$0: no $python on PATH: install Python 3.11 or later (Debian: apt-get install python3)" >&2
        return 1
    fi
    if ! _venv_python_ok "$python"; then
        echo "$0: estcoap needs Python 3.11 or later; $python is" \
            "$("$python" -c 'import platform; print(platform.python_version())' 2>&1)" \
            "(set PYTHON=/path/to/python3.11)" >&2
        return 1
    fi
    # Debian ships venv's pip bootstrap (ensurepip) in a separate package.
    if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "$0: installing python3-venv (Debian's venv module)" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq || return 1
            apt-get install -y -qq python3-venv >/dev/null || return 1
        else
            echo "$0: $python cannot make a virtual environment:" \
                "install python3-venv (sudo apt-get install python3-venv) and run again" >&2
            return 1
        fi
    fi
    echo "$0: making the project's virtual environment in .venv ($python)" >&2
    rm -rf .venv
    if ! "$python" -m venv .venv; then
        rm -rf .venv
        echo "$0: '$python -m venv .venv' failed (above)" >&2
        return 1
    fi
}

use_project_venv() {
    local extras=$1
    if [ -z "${VIRTUAL_ENV:-}" ]; then
        # A venv whose interpreter has gone (e.g. the Python it was made with was removed)
        # is made again.
        if ! _venv_python_ok .venv/bin/python; then
            _venv_create || exit 1
        fi
        VIRTUAL_ENV="$PWD/.venv"
        export VIRTUAL_ENV
        PATH="$VIRTUAL_ENV/bin:$PATH"
        export PATH
        unset PYTHONHOME
    fi
    # -qq: pip says nothing but errors; an install that fails stops the script.
    python -m pip install -qq --disable-pip-version-check -e ".${extras:+[$extras]}"
}
